"""Running Caffe for measurements: `caffe time` (caffe_time), training with
pycaffe's solver (train), resumable experiments (experiments), benchmark
records (results) and loading nets in forked children (check).
"""
