#ifndef CAFFE_UTIL_APPROX_DROPOUT_OPS_HPP_
#define CAFFE_UTIL_APPROX_DROPOUT_OPS_HPP_

#include "caffe/blob.hpp"
#include "caffe/util/approx_dropout_pattern.hpp"

namespace caffe {

// Device-specific primitives of the approx-dropout engine (CPU: BLAS and
// copies; GPU: cuBLAS and kernels) and the device's copy of a blob, so that
// one plan-walking code path serves both and never asks which device it is
// on. Matrices are row-major with explicit leading dimensions, so a
// contiguous kept part is passed as a view (pointer + leading dimension);
// index sets are BlockStrides.
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
  // The blob's data / diff on this device (memory is taken on first use).
  virtual const Dtype* data(const Blob<Dtype>& blob) const = 0;
  virtual const Dtype* diff(const Blob<Dtype>& blob) const = 0;
  virtual Dtype* mutable_data(Blob<Dtype>* blob) const = 0;
  virtual Dtype* mutable_diff(Blob<Dtype>* blob) const = 0;
};

// The engine's primitives on the host (BLAS, threaded copies) and on the GPU
// (cuBLAS, kernels; not available in CPU_ONLY builds).
template <typename Dtype>
const ApproxDropoutOps<Dtype>& ApproxDropoutCpuOps();
template <typename Dtype>
const ApproxDropoutOps<Dtype>& ApproxDropoutGpuOps();

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_OPS_HPP_
