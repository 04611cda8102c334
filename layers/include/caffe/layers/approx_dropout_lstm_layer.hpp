#ifndef CAFFE_APPROX_DROPOUT_LSTM_LAYER_HPP_
#define CAFFE_APPROX_DROPOUT_LSTM_LAYER_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layers/approx_dropout_inner_product_layer.hpp"
#include "caffe/layers/lstm_layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief Caffe's LSTM with Approximate Random Dropout (Song et al.,
 *        arXiv:1805.08939, Sec. IV-C) on its input x_t, the non-recurrent
 *        connection (as in Zaremba et al. 2014), and optionally on h_{t-1}
 *        on the recurrent path (recurrent_dropout_ratio, below).
 *
 * Configured like LSTM (recurrent_param; bottoms x, cont and optionally the
 * static input) plus approx_dropout_param. LSTM's unrolled net computes
 * W_xc x_t + b_c for all time steps with one InnerProduct ("x_transform");
 * here that layer is an ApproxDropoutInnerProduct, so one pattern per
 * iteration is shared by every time step and only the kept part of the
 * input-to-gates product is computed. With s = 1 / (1 - dropout_ratio):
 *  - ROW: the input features the layout keeps (BLOCK, the default: block b
 *    of dp contiguous blocks; STRIDED, the paper's: k % dp == b), kept inputs
 *    scaled by s (side INPUT of the inner product; `side` must be left unset
 *    or INPUT).
 *  - TILE: tiles of W_xc (4 num_output x input size) kept by tile_order,
 *    the product scaled by s.
 * recurrent_dropout_ratio r > 0 also drops hidden units of h_{t-1} on the
 * recurrent path (W_hc h_{t-1}): each step's "transform_t" InnerProduct
 * becomes an ApproxDropoutInnerProduct, ROW side INPUT (BLOCK layout unless
 * `layout` says otherwise), so only the kept columns of W_hc, a contiguous
 * view, are multiplied, scaled by 1 / (1 - r). recurrent_pattern PER_STEP
 * samples a pattern per time step, PER_SEQUENCE one per iteration for every
 * step (variational dropout); one pattern serves all streams of a step
 * (batch_slices does not apply there). h_t itself, the layer's output, is
 * untouched.
 * TEST phase is exactly LSTM; the parameter blobs are LSTM's (W_xc, b_c,
 * W_hc), so weights move freely between the two layer types.
 */
template <typename Dtype>
class ApproxDropoutLSTMLayer : public LSTMLayer<Dtype> {
 public:
  explicit ApproxDropoutLSTMLayer(const LayerParameter& param)
      : LSTMLayer<Dtype>(param), x_transform_(NULL), recurrent_fixed_(false) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "ApproxDropoutLSTM"; }

  // The unrolled net's input-to-gates product, which samples and applies
  // the patterns (its FixPattern / pattern() serve tests and tools).
  ApproxDropoutInnerProductLayer<Dtype>* input_transform() const {
    return x_transform_;
  }
  // The recurrent path's products W_hc h_{t-1}, one per time step (empty
  // when recurrent_dropout_ratio is 0).
  const vector<ApproxDropoutInnerProductLayer<Dtype>*>&
  recurrent_transforms() const {
    return h_transforms_;
  }
  // Use (dp, b) on the recurrent path at every step of every TRAIN forward
  // instead of sampling (tests and tools).
  void FixRecurrentPattern(int dp, int b);

 protected:
  virtual void FillUnrolledNet(NetParameter* net_param) const;
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

 private:
  // PER_SEQUENCE: one recurrent pattern for every step of this iteration.
  void FixSequencePattern();

  ApproxDropoutInnerProductLayer<Dtype>* x_transform_;
  vector<ApproxDropoutInnerProductLayer<Dtype>*> h_transforms_;
  shared_ptr<DropoutPatternSampler> recurrent_sampler_;
  bool recurrent_fixed_;
};

}  // namespace caffe

#endif  // CAFFE_APPROX_DROPOUT_LSTM_LAYER_HPP_
