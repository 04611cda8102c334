"""Approximate Random Dropout (Song et al., arXiv:1805.08939) for Caffe.

Subpackages, by role:

- ``patterns``  the distribution over the pattern period dp (search.py);
  pure Python.
- ``prototxt``  Caffe nets as prototxt: safe reading and writing (io), filling
  the approximate layers' distributions (fill, the ``apply`` command),
  converting stock dropout chains (convert), shape inference (shapes), the
  paper's nets (nets) and NetSpec helpers (netspec).
- ``data``      the experiments' datasets, converted once and cached.
- ``harness``   running Caffe: `caffe time` (caffe_time), training (train),
  resumable experiments (experiments), benchmark records (results) and
  loading nets in forked children (check).
- ``bundle``    the GPU bundle: packing a CUDA build (pack) and running it on a
  bare GPU machine (run, standard library only).

``caffe_env`` finds and imports the project's Caffe build; ``cli`` is the
``approx-dropout`` command (also ``python -m approx_dropout``).
"""

__version__ = "0.1.0"
