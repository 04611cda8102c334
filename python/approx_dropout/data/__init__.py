"""The experiments' datasets, converted once to Caffe's HDF5 input and cached:
Fashion-MNIST (fashion_mnist) and a word-level text corpus (text).

Pure Python (numpy; h5py to write the HDF5 files): importable without a
Caffe build.
"""
