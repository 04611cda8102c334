#include <vector>

#include "caffe/filler.hpp"
#include "caffe/util/inner_product_setup.hpp"

namespace caffe {

template <typename Dtype>
void SetUpInnerProductBlobs(const LayerParameter& param, int K,
                            std::vector<shared_ptr<Blob<Dtype> > >* blobs) {
  if (!blobs->empty()) {
    LOG(INFO) << "Skipping parameter initialization";
    return;
  }
  const InnerProductParameter& ip = param.inner_product_param();
  const int N = ip.num_output();
  blobs->resize(ip.bias_term() ? 2 : 1);
  std::vector<int> weight_shape(2);
  weight_shape[0] = N;
  weight_shape[1] = K;
  (*blobs)[0].reset(new Blob<Dtype>(weight_shape));
  shared_ptr<Filler<Dtype> > weight_filler(GetFiller<Dtype>(
      ip.weight_filler()));
  weight_filler->Fill((*blobs)[0].get());
  if (ip.bias_term()) {
    (*blobs)[1].reset(new Blob<Dtype>(std::vector<int>(1, N)));
    shared_ptr<Filler<Dtype> > bias_filler(GetFiller<Dtype>(
        ip.bias_filler()));
    bias_filler->Fill((*blobs)[1].get());
  }
}

template <typename Dtype>
int ReshapeInnerProductTop(const LayerParameter& param, int K,
                           const Blob<Dtype>& bottom, Blob<Dtype>* top) {
  const int axis = bottom.CanonicalAxisIndex(
      param.inner_product_param().axis());
  CHECK_EQ(K, bottom.count(axis)) << "Layer " << param.name()
      << ": input size incompatible with inner product parameters";
  std::vector<int> top_shape = bottom.shape();
  top_shape.resize(axis + 1);
  top_shape[axis] = param.inner_product_param().num_output();
  top->Reshape(top_shape);
  return bottom.count(0, axis);
}

template void SetUpInnerProductBlobs<float>(const LayerParameter&, int,
    std::vector<shared_ptr<Blob<float> > >*);
template void SetUpInnerProductBlobs<double>(const LayerParameter&, int,
    std::vector<shared_ptr<Blob<double> > >*);
template int ReshapeInnerProductTop<float>(const LayerParameter&, int,
    const Blob<float>&, Blob<float>*);
template int ReshapeInnerProductTop<double>(const LayerParameter&, int,
    const Blob<double>&, Blob<double>*);

}  // namespace caffe
