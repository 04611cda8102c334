#ifndef CAFFE_DROP_CONNECT_INNER_PRODUCT_LAYER_HPP_
#define CAFFE_DROP_CONNECT_INNER_PRODUCT_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief InnerProduct with Bernoulli DropConnect (Wan et al., ICML 2013):
 *        the random-mask reference that TDP's regular tiles are measured
 *        against. It computes the dense product with a masked copy of W, so
 *        it is as slow as stock InnerProduct or slower: a baseline, not a
 *        speed-up.
 *
 * W is num_output x K and y = x W^T + bias, as in InnerProductLayer. In each
 * TRAIN forward, every one of the batch_slices slices of the M batch rows
 * (slice s = rows [floor(s M / S), floor((s + 1) M / S)), as the approximate
 * layers cut them) draws a mask over W: each tile_height x tile_width tile
 * (drop_connect_unit DROP_CONNECT_TILE; edge tiles are short) or each weight
 * (DROP_CONNECT_WEIGHT) is kept independently with probability 1 - p, p =
 * dropout_ratio, and
 *   y[m] = s x[m] (W . M_slice(m))^T + bias,  s = 1 / (1 - p),
 * exactly TDP's formula with a random mask instead of a regular one (bias
 * never dropped). TEST computes InnerProduct (the usual weight-scaling
 * inference, not Wan et al.'s moment-matching sampler).
 * Reads approx_dropout_param's dropout_ratio, drop_connect_unit,
 * tile_height, tile_width and batch_slices only, and refuses the others.
 * CPU code only; in GPU mode Caffe runs it on the host.
 */
template <typename Dtype>
class DropConnectInnerProductLayer : public Layer<Dtype> {
 public:
  explicit DropConnectInnerProductLayer(const LayerParameter& param)
      : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "DropConnectInnerProduct"; }
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

  // The masks of the last TRAIN forward: whether weight (j, k) took part in
  // slice s (tests).
  bool kept(int s, int j, int k) const;
  int num_slices() const { return slices_; }
  // Whether the last forward applied masks (TRAIN with dropout_ratio > 0).
  bool masked() const { return masked_; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

 private:
  // First batch row of slice s.
  int SliceBegin(int s) const;
  // masked_w_ = s W . mask of slice s.
  void MaskWeights(int s);

  int M_, K_, N_;
  bool bias_term_, weight_unit_, masked_;
  int slices_;
  int tile_h_, tile_w_;         // a mask unit: 1 x 1 for DROP_CONNECT_WEIGHT
  int unit_rows_, unit_cols_;   // mask units over W's rows and columns
  Dtype scale_;
  float ratio_;
  // One byte per mask unit, slice after slice (unit_rows_ x unit_cols_ each).
  std::vector<unsigned char> mask_;
  Blob<Dtype> masked_w_, w_grad_;  // N x K each
  Blob<Dtype> bias_multiplier_;
};

}  // namespace caffe

#endif  // CAFFE_DROP_CONNECT_INNER_PRODUCT_LAYER_HPP_
