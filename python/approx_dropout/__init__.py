"""Approximate Random Dropout (Song et al., arXiv:1805.08939) for Caffe.

Subpackages, by role:

- ``patterns``  the distribution over the pattern period dp (search.py);
  pure Python.
- ``prototxt``  Caffe nets as prototxt: safe reading and the text of a net
  (io), what the approximate layers accept and default to (rules: the C++
  setup checks mirrored), filling the approximate layers' distributions
  (fill, the ``apply`` command), converting stock dropout chains (convert),
  shape inference (shapes), the paper's nets (nets) and NetSpec helpers
  (netspec).
- ``data``      the experiments' datasets, converted once and cached.
- ``harness``   running Caffe: `caffe time` (caffe_time), training (train),
  resumable experiments (experiments), benchmark records (results) and
  loading nets in forked children (check).
- ``bundle``    the GPU bundle: packing a CUDA build (pack) and running it on a
  bare GPU machine (run, standard library only).

``methods`` names the experiments' and benchmarks' methods, one meaning per
name (MLP: ``method_settings``, ``method_label``; LSTM LM: ``LM_METHODS``,
``lm_method_settings``, ``lm_method_label``; pure Python), which
``prototxt.nets`` builds (``mlp_for_method``, ``lm_for_method``).
``files`` writes files safely (atomically, locked, with backups; standard
library only; ``FileWriteError``) for the tools, the harness and the scripts.
``caffe_env`` finds and imports the project's Caffe build; ``cli`` is the
``approx-dropout`` command (also ``python -m approx_dropout``); ``net_check``
sets a net up in a child process, so that a bad layer parameter raises
``NetCheckError`` here instead of Caffe aborting the process:
``approx_dropout.check(net)`` (the ``approx-dropout check`` command).
"""
__version__ = "0.1.0"
__all__ = ["NetCheckError", "check"]

# check and NetCheckError (module net_check) are imported on first use:
# importing the package loads neither Caffe nor protobuf.
_LAZY = ("check", "NetCheckError")


def __getattr__(name: str):
    if name in _LAZY:
        from . import net_check

        value = getattr(net_check, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
