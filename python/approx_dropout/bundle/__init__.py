"""The GPU bundle: a CUDA build packed with its libraries, this package and
the benchmark nets into one archive (pack), and its runner on a GPU machine
without package access (run, standard library only).
"""
