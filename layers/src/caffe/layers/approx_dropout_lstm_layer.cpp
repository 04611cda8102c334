#include <string>
#include <vector>

#include "caffe/layer_factory.hpp"
#include "caffe/layers/approx_dropout_lstm_layer.hpp"

namespace caffe {

template <typename Dtype>
void ApproxDropoutLSTMLayer<Dtype>::FillUnrolledNet(
    NetParameter* net_param) const {
  const string where = "Layer " + this->layer_param_.name() +
                       ": approx_dropout_param.";
  const ApproxDropoutParameter& param =
      this->layer_param_.approx_dropout_param();
  const bool row = param.pattern() == ApproxDropoutParameter_Pattern_ROW;
  if (param.has_side()) {
    CHECK(row && param.side() == ApproxDropoutParameter_Side_INPUT) << where
        << "side: ApproxDropoutLSTM always drops its input x_t (ROW drops "
        << "input features, TILE drops tiles of W_xc); leave side unset";
  }
  LSTMLayer<Dtype>::FillUnrolledNet(net_param);
  LayerParameter* x_transform = NULL;
  for (int i = 0; i < net_param->layer_size(); ++i) {
    if (net_param->layer(i).name() == "x_transform") {
      x_transform = net_param->mutable_layer(i);
    }
  }
  CHECK(x_transform != NULL) << "LSTM's unrolled net has no x_transform "
      << "layer; this Caffe's LSTMLayer is not the one ApproxDropoutLSTM "
      << "was written for";
  CHECK_EQ(x_transform->type(), "InnerProduct");
  x_transform->set_type("ApproxDropoutInnerProduct");
  ApproxDropoutParameter* inner = x_transform->mutable_approx_dropout_param();
  inner->CopyFrom(param);
  if (row) inner->set_side(ApproxDropoutParameter_Side_INPUT);
  // RecurrentLayer builds the unrolled net without a NetState, so its layers
  // would all be in the TEST phase; the patterns need this layer's phase.
  x_transform->set_phase(this->phase_);
}

template <typename Dtype>
void ApproxDropoutLSTMLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  LSTMLayer<Dtype>::LayerSetUp(bottom, top);
  x_transform_ = NULL;
  const vector<shared_ptr<Layer<Dtype> > >& layers =
      this->unrolled_net_->layers();
  for (int i = 0; i < layers.size(); ++i) {
    if (string(layers[i]->type()) == "ApproxDropoutInnerProduct") {
      CHECK(x_transform_ == NULL) << "two approx-dropout layers unrolled";
      x_transform_ = dynamic_cast<ApproxDropoutInnerProductLayer<Dtype>*>(
          layers[i].get());
    }
  }
  CHECK(x_transform_ != NULL) << "Layer " << this->layer_param_.name()
      << ": the unrolled net lost its ApproxDropoutInnerProduct";
}

INSTANTIATE_CLASS(ApproxDropoutLSTMLayer);
REGISTER_LAYER_CLASS(ApproxDropoutLSTM);

}  // namespace caffe
