"""The distribution over the pattern period dp: searched, checked, tabulated.

Pure Python (numpy only): importable without a Caffe build.
"""
