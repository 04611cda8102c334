#include <vector>

#include "caffe/layers/approx_dropout_inner_product_layer.hpp"

namespace caffe {

// The same plan as on the CPU, walked with cuBLAS calls and kernels.
template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  ForwardWith(ApproxDropoutGpuOps<Dtype>(), bottom, top);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Backward_gpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  BackwardWith(ApproxDropoutGpuOps<Dtype>(), top, propagate_down, bottom);
}

INSTANTIATE_LAYER_GPU_FUNCS(ApproxDropoutInnerProductLayer);

}  // namespace caffe
