#ifndef CAFFE_UTIL_INNER_PRODUCT_SETUP_HPP_
#define CAFFE_UTIL_INNER_PRODUCT_SETUP_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

// What our InnerProduct-shaped layers (ApproxDropoutInnerProduct,
// DropConnectInnerProduct) set up as InnerProductLayer does.

// W (num_output x K) and, with bias_term, the bias (num_output), filled by
// inner_product_param's fillers; leaves blobs alone when it is not empty
// (parameters shared or loaded).
template <typename Dtype>
void SetUpInnerProductBlobs(const LayerParameter& param, int K,
                            std::vector<shared_ptr<Blob<Dtype> > >* blobs);

// Reshapes top to bottom's shape up to inner_product_param.axis, then
// num_output, after checking that the rest of bottom holds K values; returns
// the number of rows M (bottom's count up to the axis).
template <typename Dtype>
int ReshapeInnerProductTop(const LayerParameter& param, int K,
                           const Blob<Dtype>& bottom, Blob<Dtype>* top);

}  // namespace caffe

#endif  // CAFFE_UTIL_INNER_PRODUCT_SETUP_HPP_
