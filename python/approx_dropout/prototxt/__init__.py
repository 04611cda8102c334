"""Caffe nets as prototxt: read and write them safely (io), fill the
approximate layers' distributions (fill), convert stock dropout chains
(convert), infer blob shapes (shapes), generate the paper's nets (nets) and
build nets with NetSpec (netspec).

These modules parse and build NetParameter messages with the caffe_pb2 that
the project's Caffe build generates (see approx_dropout.caffe_env), so they
need a build when they read, write or generate a net.
"""
