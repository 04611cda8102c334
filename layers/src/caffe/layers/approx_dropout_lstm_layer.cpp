#include <string>
#include <vector>

#include "caffe/layer_factory.hpp"
#include "caffe/layers/approx_dropout_lstm_layer.hpp"

namespace caffe {

namespace {

// The recurrent path's settings in the fields DropoutPatternSampler and the
// per-step ApproxDropoutInnerProduct read.
ApproxDropoutParameter RecurrentParam(const ApproxDropoutParameter& param) {
  ApproxDropoutParameter rec;
  rec.set_dropout_ratio(param.recurrent_dropout_ratio());
  rec.set_pattern(ApproxDropoutParameter_Pattern_ROW);
  rec.set_side(ApproxDropoutParameter_Side_INPUT);
  rec.set_layout(param.has_layout() ? param.layout()
                                    : ApproxDropoutParameter_Layout_BLOCK);
  for (int i = 0; i < param.recurrent_pattern_distribution_size(); ++i) {
    rec.add_pattern_distribution(param.recurrent_pattern_distribution(i));
  }
  // One pattern per step for all streams: the 20-odd-row products h W_hc^T
  // are bound by reading W_hc, and every further slice offset would read
  // another block of it (measured: 2 slices cost a third of the gain).
  rec.set_batch_slices(1);
  return rec;
}

}  // namespace

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
  CHECK(row || !param.has_layout()) << where << "layout applies to ROW "
      << "input patterns (and the recurrent path, BLOCK when unset); leave "
      << "it unset with pattern: TILE";
  LSTMLayer<Dtype>::FillUnrolledNet(net_param);
  const bool recurrent = param.recurrent_dropout_ratio() > 0;
  const ApproxDropoutParameter rec = RecurrentParam(param);
  bool found = false;
  for (int i = 0; i < net_param->layer_size(); ++i) {
    LayerParameter* layer = net_param->mutable_layer(i);
    const bool input = layer->name() == "x_transform";
    // transform_t: W_hc h_conted_{t-1}, one per time step.
    const bool hidden = recurrent && layer->name().find("transform_") == 0;
    if (!input && !hidden) continue;
    CHECK_EQ(layer->type(), "InnerProduct") << "LSTM's unrolled layer "
        << layer->name() << " is not an InnerProduct; this Caffe's LSTMLayer "
        << "is not the one ApproxDropoutLSTM was written for";
    layer->set_type("ApproxDropoutInnerProduct");
    ApproxDropoutParameter* inner = layer->mutable_approx_dropout_param();
    if (input) {
      found = true;
      inner->CopyFrom(param);
      inner->clear_recurrent_dropout_ratio();
      inner->clear_recurrent_pattern_distribution();
      inner->clear_recurrent_pattern();
      if (row) inner->set_side(ApproxDropoutParameter_Side_INPUT);
    } else {
      inner->CopyFrom(rec);
    }
    // RecurrentLayer builds the unrolled net without a NetState, so its
    // layers would all be in the TEST phase; the patterns need this phase.
    layer->set_phase(this->phase_);
  }
  CHECK(found) << "LSTM's unrolled net has no x_transform layer; this "
      << "Caffe's LSTMLayer is not the one ApproxDropoutLSTM was written for";
}

template <typename Dtype>
void ApproxDropoutLSTMLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const ApproxDropoutParameter& param =
      this->layer_param_.approx_dropout_param();
  // Checks recurrent_dropout_ratio and recurrent_pattern_distribution (and
  // samples PER_SEQUENCE patterns) over the hidden units of h_{t-1}.
  recurrent_sampler_.reset(new DropoutPatternSampler(RecurrentParam(param),
      this->layer_param_.recurrent_param().num_output(),
      this->layer_param_.name(), "recurrent_"));
  LSTMLayer<Dtype>::LayerSetUp(bottom, top);
  x_transform_ = NULL;
  h_transforms_.clear();
  const vector<shared_ptr<Layer<Dtype> > >& layers =
      this->unrolled_net_->layers();
  const vector<string>& names = this->unrolled_net_->layer_names();
  // RecurrentLayer prefixes the unrolled layers' names with this layer's.
  const string& name = this->layer_param_.name();
  const string input_name = (name.empty() ? "" : name + "_") + "x_transform";
  for (size_t i = 0; i < layers.size(); ++i) {
    if (string(layers[i]->type()) != "ApproxDropoutInnerProduct") continue;
    ApproxDropoutInnerProductLayer<Dtype>* layer =
        dynamic_cast<ApproxDropoutInnerProductLayer<Dtype>*>(layers[i].get());
    if (names[i] == input_name) {
      x_transform_ = layer;
    } else {
      h_transforms_.push_back(layer);
    }
  }
  CHECK(x_transform_ != NULL) << "Layer " << this->layer_param_.name()
      << ": the unrolled net lost its ApproxDropoutInnerProduct";
  // The steps run one at a time and read one W_hc: one set of compact
  // buffers serves them all (a set per step is T gathered copies of W_hc
  // with a STRIDED layout).
  if (!h_transforms_.empty()) {
    shared_ptr<ApproxDropoutSharedBuffers<Dtype> > buffers(
        new ApproxDropoutSharedBuffers<Dtype>());
    for (size_t i = 0; i < h_transforms_.size(); ++i) {
      h_transforms_[i]->ShareCompactBuffers(buffers);
    }
  }
}

template <typename Dtype>
void ApproxDropoutLSTMLayer<Dtype>::FixRecurrentPattern(int dp, int b) {
  CHECK(!h_transforms_.empty()) << "Layer " << this->layer_param_.name()
      << ": FixRecurrentPattern needs recurrent_dropout_ratio > 0";
  recurrent_fixed_ = true;
  for (size_t i = 0; i < h_transforms_.size(); ++i) {
    h_transforms_[i]->FixPattern(dp, b);
  }
}

template <typename Dtype>
void ApproxDropoutLSTMLayer<Dtype>::FixSequencePattern() {
  if (this->phase_ != TRAIN || h_transforms_.empty() || recurrent_fixed_ ||
      this->layer_param_.approx_dropout_param().recurrent_pattern() !=
      ApproxDropoutParameter_RecurrentPattern_PER_SEQUENCE) {
    return;
  }
  const DropoutPattern p = recurrent_sampler_->Sample();
  for (size_t i = 0; i < h_transforms_.size(); ++i) {
    h_transforms_[i]->FixPattern(p.dp, p.b);
  }
}

template <typename Dtype>
void ApproxDropoutLSTMLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  FixSequencePattern();
  LSTMLayer<Dtype>::Forward_cpu(bottom, top);
}

template <typename Dtype>
void ApproxDropoutLSTMLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  FixSequencePattern();
  LSTMLayer<Dtype>::Forward_gpu(bottom, top);
}

INSTANTIATE_CLASS(ApproxDropoutLSTMLayer);
REGISTER_LAYER_CLASS(ApproxDropoutLSTM);

}  // namespace caffe
