#ifndef CAFFE_APPROX_DROPOUT_INNER_PRODUCT_LAYER_HPP_
#define CAFFE_APPROX_DROPOUT_INNER_PRODUCT_LAYER_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/util/approx_dropout_compact_buffers.hpp"
#include "caffe/util/approx_dropout_ops.hpp"
#include "caffe/util/approx_dropout_pattern.hpp"
#include "caffe/util/approx_dropout_pattern_top.hpp"
#include "caffe/util/approx_dropout_plan.hpp"

namespace caffe {

template <typename Dtype> class ApproxDropoutLazyParam;

/**
 * @brief InnerProduct fused with Approximate Random Dropout (Song et al.,
 *        arXiv:1805.08939): each TRAIN iteration samples a regular pattern
 *        (dp, b) and multiplies only the kept part of the matrices.
 *
 * W is num_output x K and y = x W^T + bias, as in InnerProductLayer. With
 * s = 1 / (1 - dropout_ratio):
 *  - ROW, side OUTPUT (RDP): output j kept iff j % dp == b (layout
 *    STRIDED) or j lies in block b of dp contiguous blocks (BLOCK);
 *    y_j = s (x W_j^T + bias_j) if kept, else 0.
 *  - ROW, side INPUT: input feature k kept likewise;
 *    y = s x[:, kept] W[:, kept]^T + bias.
 *  - TILE (TDP): W is cut into tile_height x tile_width tiles; tile (r, c)
 *    is kept iff (r C + c) % dp == b (ROW_MAJOR), (r + c) % dp == b
 *    (DIAGONAL), or (i + g) % dp == b where i and g are the blocks of r and
 *    c when the R tile rows and C tile columns are each cut into dp
 *    contiguous blocks (BLOCKS); y = s x (W . M)^T + bias.
 * With batch_slices S, the M rows of x are cut into S contiguous slices;
 * one dp serves the iteration and slice s uses b_s = (b + s) % dp.
 * TEST phase computes InnerProduct exactly. An optional second top, the
 * pattern top (S x 4), receives (dp, b_s, layout code, num_output) of every
 * slice; the code is STRIDED or BLOCK when the outputs are dropped (ROW,
 * OUTPUT, dropout_ratio > 0) and ApproxDropoutPatternTop::kNotDropped
 * otherwise (approx_dropout_pattern_top.hpp: the protocol and its checks).
 *
 * Pattern propagation: a second bottom, the pattern top of the layer whose
 * (ReLU'd) output is x, makes this layer skip the input columns that layer
 * dropped, slice by slice (its slices and this layer's need not agree, in
 * number or phase): forward multiplies only kept columns, backward
 * computes dx only there (zeros elsewhere) and dW only on kept rows x kept
 * columns. Those columns of x are zero, so nothing computed changes; only
 * the time does. Needs ROW on the output side (dropout_ratio 0 only skips).
 */
template <typename Dtype>
class ApproxDropoutInnerProductLayer : public Layer<Dtype> {
 public:
  explicit ApproxDropoutInnerProductLayer(const LayerParameter& param)
      : Layer<Dtype>(param), pattern_top_(this),
        bufs_(new ApproxDropoutSharedBuffers<Dtype>()) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const {
    return "ApproxDropoutInnerProduct";
  }
  virtual inline int MinBottomBlobs() const { return 1; }
  virtual inline int MaxBottomBlobs() const { return 2; }
  // The pattern bottom carries integers, not a differentiable input.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index == 0;
  }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 2; }

  // Use this iteration pattern (dp, b) for every TRAIN forward instead of
  // sampling (tests and tools); slice s then uses (dp, (b + s) % dp). dp must
  // be in [1, number of units], b in [0, dp). Call after SetUp.
  void FixPattern(int dp, int b);
  // The iteration pattern of the last forward pass (slice 0's).
  const DropoutPattern& pattern() const { return pattern_; }
  // The pattern of every slice in the last forward pass.
  const vector<DropoutPattern>& slice_patterns() const {
    return slice_patterns_;
  }
  const DropoutPatternSampler& sampler() const { return *sampler_; }
  // The plan of the last forward pass (GEMM groups of every slice).
  const ApproxDropoutPlan& plan() const { return plan_; }

  // The solver's deferred update (approx_dropout_lazy_update.hpp) of blob i
  // (0 weights, 1 bias), or NULL: forward brings the cells it reads up to
  // date, backward reports the cells whose diff it wrote.
  void set_lazy_param(int blob_index, ApproxDropoutLazyParam<Dtype>* lazy);
  // Use `buffers` (shared with layers of the same shape) for the compact y,
  // W and weight gradient instead of this layer's own.
  void ShareCompactBuffers(
      const shared_ptr<ApproxDropoutSharedBuffers<Dtype> >& buffers);
  const ApproxDropoutSharedBuffers<Dtype>* compact_buffers() const {
    return bufs_.get();
  }
  // Cell sizes (rows x columns of blob i; a bias is N x 1) fine enough that
  // whole cells cover this layer's kept parts with little excess.
  void LazyCells(int blob_index, int* cell_rows, int* cell_cols) const;

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

 private:
  // Where one GEMM group of a slice reads and writes: x, y (dy) in place
  // (NULL) or in the slice's share of a compact buffer, and W in place or
  // as gathered. Forward and backward take them from here, so they agree on
  // the buffers' layout.
  struct GroupOperands {
    int m0, rows;        // the slice's rows of the batch
    Dtype* x_compact;    // the gathered columns g.in of x (dx in backward)
    Dtype* y_compact;    // the columns g.out of y (dy)
    int ldx, ldy;        // x's and y's leading dimensions, compact or not
    const Dtype* w;      // W[g.out, g.in], leading dimension g.ldw
  };
  GroupOperands Operands(const ApproxDropoutOps<Dtype>& ops,
                         const ApproxDropoutClass& cls,
                         const ApproxDropoutGroup& g, int slice);
  void WritePatternTop(Blob<Dtype>* top) const;
  void ForwardWith(const ApproxDropoutOps<Dtype>& ops,
      const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);
  void BackwardWith(const ApproxDropoutOps<Dtype>& ops,
      const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
      const vector<Blob<Dtype>*>& bottom);
  // The plan's parts of the weights and bias: caught up (before reading
  // them) or reported written (after backward wrote their diff).
  void VisitLazyParams(bool written, bool weights, bool bias);

  int M_, K_, N_;
  bool bias_term_;
  ApproxDropoutParameter param_;
  ApproxDropoutShape shape_;
  bool drops_outputs_;  // ROW, side OUTPUT: dropped neurons lose their bias
  int batch_slices_;    // S of the TRAIN phase
  shared_ptr<DropoutPatternSampler> sampler_;
  DropoutPattern pattern_;
  vector<DropoutPattern> slice_patterns_;  // this iteration's
  ApproxDropoutPatternTopOwner pattern_top_;  // a producer's second top
  ApproxDropoutPatternBottom pattern_bottom_;  // a consumer's second bottom
  ApproxDropoutPlan plan_;  // this iteration's
  Dtype scale_;
  // Preallocated compact operands (no allocation per iteration; memory is
  // taken only when a pattern first uses a buffer).
  Blob<Dtype> x_buf_;
  shared_ptr<ApproxDropoutSharedBuffers<Dtype> > bufs_;
  vector<ApproxDropoutLazyParam<Dtype>*> lazy_;
};

}  // namespace caffe

#endif  // CAFFE_APPROX_DROPOUT_INNER_PRODUCT_LAYER_HPP_
