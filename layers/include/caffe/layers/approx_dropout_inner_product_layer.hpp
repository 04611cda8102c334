#ifndef CAFFE_APPROX_DROPOUT_INNER_PRODUCT_LAYER_HPP_
#define CAFFE_APPROX_DROPOUT_INNER_PRODUCT_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/util/approx_dropout_pattern.hpp"

namespace caffe {

// Device-specific primitives of the approx-dropout engine. Matrices are
// row-major with explicit leading dimensions; index sets are BlockStrides.
template <typename Dtype>
class ApproxDropoutOps {
 public:
  virtual ~ApproxDropoutOps() {}
  // C = alpha op(A) op(B) + beta C
  virtual void gemm(bool trans_a, bool trans_b, int m, int n, int k,
      Dtype alpha, const Dtype* a, int lda, const Dtype* b, int ldb,
      Dtype beta, Dtype* c, int ldc) const = 0;
  // y[i * incy] += alpha * sum_r A[r, i] for i < n (A is m x n, lda)
  virtual void add_column_sums(int m, int n, Dtype alpha, const Dtype* a,
      int lda, Dtype* y, int incy) const = 0;
  // dst (rows x cols.size(), dense) = src[r, cols[c]] (src leading dim ld)
  virtual void gather(int rows, const BlockStride& row_map,
      const BlockStride& cols, const Dtype* src, int ld, Dtype* dst) const = 0;
  // dst[rows[r], cols[c]] (+)= src[r, c]; row_map may be the identity.
  virtual void scatter(int rows, const BlockStride& row_map,
      const BlockStride& cols, const Dtype* src, Dtype* dst, int ld,
      bool accumulate) const = 0;
  // dst[r, cols[c]] += alpha * bias[cols[c]] for r < rows
  virtual void add_bias(int rows, const BlockStride& cols, Dtype alpha,
      const Dtype* bias, Dtype* dst, int ld) const = 0;
  virtual void set_zero(int n, Dtype* x) const = 0;
};

/**
 * @brief InnerProduct fused with Approximate Random Dropout (Song et al.,
 *        arXiv:1805.08939): each TRAIN iteration samples a regular pattern
 *        (dp, b) and multiplies only the kept part of the matrices.
 *
 * W is num_output x K and y = x W^T + bias, as in InnerProductLayer. With
 * s = 1 / (1 - dropout_ratio):
 *  - ROW, side OUTPUT (RDP): output j kept iff j % dp == b;
 *    y_j = s (x W_j^T + bias_j) if kept, else 0.
 *  - ROW, side INPUT: input feature k kept iff k % dp == b;
 *    y = s x[:, kept] W[:, kept]^T + bias.
 *  - TILE (TDP): W is cut into tile_height x tile_width tiles; tile (r, c)
 *    is kept iff (r C + c) % dp == b (ROW_MAJOR) or (r + c) % dp == b
 *    (DIAGONAL); y = s x (W . M)^T + bias.
 * With batch_slices S, the M rows of x are cut into S contiguous slices;
 * one dp serves the iteration and slice s uses b_s = (b + s) % dp.
 * TEST phase computes InnerProduct exactly. An optional second top (S x 2)
 * receives (dp, b_s) of every slice.
 */
template <typename Dtype>
class ApproxDropoutInnerProductLayer : public Layer<Dtype> {
 public:
  explicit ApproxDropoutInnerProductLayer(const LayerParameter& param)
      : Layer<Dtype>(param), fixed_(false), num_classes_(0) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const {
    return "ApproxDropoutInnerProduct";
  }
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 2; }

  // Use this iteration pattern (dp, b) for every TRAIN forward instead of
  // sampling (tests and tools); slice s then uses (dp, (b + s) % dp). dp must
  // be in [1, number of units], b in [0, dp).
  void FixPattern(int dp, int b);
  // The iteration pattern of the last forward pass (slice 0's).
  const DropoutPattern& pattern() const { return pattern_; }
  // The pattern of every slice in the last forward pass.
  const vector<DropoutPattern>& slice_patterns() const {
    return slice_patterns_;
  }
  const DropoutPatternSampler& sampler() const { return *sampler_; }

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
  // One GEMM's share of the kept work of one pattern: outputs `out` (columns
  // of y, rows of W) against inputs `in` (columns of x and of W). The groups
  // of a pattern have disjoint out sets and disjoint in sets.
  struct Group {
    BlockStride out, in;
    // Compact x and y of a slice of m rows start at m * x_cols_before
    // (m * y_cols_before) in the slice's region of x_buf_ (y_buf_).
    int x_cols_before, y_cols_before;
    int w_offset;  // compact W[out, in] within the pattern's region of w_buf_
    bool w_view;   // W[out, in] is read in place with a leading dimension
    int ldw;       // W[out, in]'s leading dimension, in place or compact
  };
  // The slices that share one pattern (slices s and s + dp do), computed
  // with the same groups and the same gathered W.
  struct PatternClass {
    DropoutPattern pattern;
    vector<int> slices;  // non-empty slices only
    vector<Group> groups;
    int w_base;          // its region of w_buf_ and dw_buf_
    bool out_covered, in_covered;  // one group computes all outputs / inputs
  };
  // Plans slice_patterns_ (one dp for all slices).
  void PlanIteration();
  void PlanGroups(const DropoutPattern& pattern, PatternClass* cls) const;
  int SliceBegin(int s) const {
    return static_cast<int>(static_cast<int64_t>(s) * M_ / num_slices_);
  }
  void ForwardWith(const ApproxDropoutOps<Dtype>& ops, bool gpu,
      const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);
  void BackwardWith(const ApproxDropoutOps<Dtype>& ops, bool gpu,
      const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
      const vector<Blob<Dtype>*>& bottom);
  int units() const;

  int M_, K_, N_;
  bool bias_term_;
  ApproxDropoutParameter param_;
  bool drops_outputs_;  // ROW, side OUTPUT: dropped neurons lose their bias
  bool diagonal_;       // TILE with tile_order DIAGONAL
  int batch_slices_;    // S of the TRAIN phase
  shared_ptr<DropoutPatternSampler> sampler_;
  bool fixed_;
  DropoutPattern fixed_pattern_, pattern_;
  vector<DropoutPattern> slice_patterns_;
  // This iteration's plan.
  int num_slices_;  // batch_slices_ in TRAIN, 1 in TEST
  vector<PatternClass> classes_;  // the first num_classes_ are this plan's
  int num_classes_;
  Dtype scale_;
  bool out_covered_, in_covered_;  // every class covers all outputs / inputs
  // Preallocated compact operands (no allocation per iteration; memory is
  // taken only when a pattern first uses a buffer).
  Blob<Dtype> x_buf_, w_buf_, y_buf_, dw_buf_;
};

}  // namespace caffe

#endif  // CAFFE_APPROX_DROPOUT_INNER_PRODUCT_LAYER_HPP_
