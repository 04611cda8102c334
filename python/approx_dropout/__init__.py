"""Approximate Random Dropout (Song et al., arXiv:1805.08939) for Caffe."""

__version__ = "0.1.0"
