#include "caffe/common.hpp"
#include "caffe/util/approx_dropout_ops.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

template <typename Dtype>
__global__ void GatherKernel(int n, int nc, BlockStride row_map,
    BlockStride cols, const Dtype* src, int ld, Dtype* dst) {
  CUDA_KERNEL_LOOP(index, n) {
    const int r = index / nc, c = index % nc;
    dst[index] = src[row_map[r] * ld + cols[c]];
  }
}

template <typename Dtype>
__global__ void ScatterKernel(int n, int nc, BlockStride row_map,
    BlockStride cols, const Dtype* src, Dtype* dst, int ld, bool accumulate) {
  CUDA_KERNEL_LOOP(index, n) {
    const int r = index / nc, c = index % nc;
    Dtype* d = dst + row_map[r] * ld + cols[c];
    // Each destination is written by exactly one thread: no atomics needed.
    *d = accumulate ? *d + src[index] : src[index];
  }
}

template <typename Dtype>
__global__ void AddBiasKernel(int n, int nc, BlockStride cols, Dtype alpha,
    const Dtype* bias, Dtype* dst, int ld) {
  CUDA_KERNEL_LOOP(index, n) {
    const int r = index / nc, col = cols[index % nc];
    dst[r * ld + col] += alpha * bias[col];
  }
}

// One thread per column; consecutive threads read consecutive addresses.
template <typename Dtype>
__global__ void AddColumnSumsKernel(int m, int n, Dtype alpha,
    const Dtype* a, int lda, Dtype* y, int incy) {
  CUDA_KERNEL_LOOP(i, n) {
    Dtype sum = 0;
    for (int r = 0; r < m; ++r) sum += a[r * lda + i];
    y[i * incy] += alpha * sum;
  }
}

inline cublasStatus_t cublas_gemm(cublasOperation_t ta, cublasOperation_t tb,
    int m, int n, int k, const float* alpha, const float* a, int lda,
    const float* b, int ldb, const float* beta, float* c, int ldc) {
  return cublasSgemm(Caffe::cublas_handle(), ta, tb, m, n, k, alpha, a, lda,
                     b, ldb, beta, c, ldc);
}

inline cublasStatus_t cublas_gemm(cublasOperation_t ta, cublasOperation_t tb,
    int m, int n, int k, const double* alpha, const double* a, int lda,
    const double* b, int ldb, const double* beta, double* c, int ldc) {
  return cublasDgemm(Caffe::cublas_handle(), ta, tb, m, n, k, alpha, a, lda,
                     b, ldb, beta, c, ldc);
}

template <typename Dtype>
class GpuOps : public ApproxDropoutOps<Dtype> {
 public:
  virtual void gemm(bool trans_a, bool trans_b, int m, int n, int k,
      Dtype alpha, const Dtype* a, int lda, const Dtype* b, int ldb,
      Dtype beta, Dtype* c, int ldc) const {
    if (m == 0 || n == 0) return;
    // cuBLAS is column-major: C^T = op(B)^T op(A)^T with the same buffers.
    CUBLAS_CHECK(cublas_gemm(trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
        trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a, lda,
        &beta, c, ldc));
  }
  virtual void add_column_sums(int m, int n, Dtype alpha, const Dtype* a,
      int lda, Dtype* y, int incy) const {
    if (n == 0) return;
    AddColumnSumsKernel<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
        m, n, alpha, a, lda, y, incy);
    CUDA_POST_KERNEL_CHECK;
  }
  virtual void gather(int rows, const BlockStride& row_map,
      const BlockStride& cols, const Dtype* src, int ld, Dtype* dst) const {
    const int nc = cols.size(), n = rows * nc;
    if (n == 0) return;
    GatherKernel<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
        n, nc, row_map, cols, src, ld, dst);
    CUDA_POST_KERNEL_CHECK;
  }
  virtual void scatter(int rows, const BlockStride& row_map,
      const BlockStride& cols, const Dtype* src, Dtype* dst, int ld,
      bool accumulate) const {
    const int nc = cols.size(), n = rows * nc;
    if (n == 0) return;
    ScatterKernel<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
        n, nc, row_map, cols, src, dst, ld, accumulate);
    CUDA_POST_KERNEL_CHECK;
  }
  virtual void add_bias(int rows, const BlockStride& cols, Dtype alpha,
      const Dtype* bias, Dtype* dst, int ld) const {
    const int nc = cols.size(), n = rows * nc;
    if (n == 0) return;
    AddBiasKernel<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
        n, nc, cols, alpha, bias, dst, ld);
    CUDA_POST_KERNEL_CHECK;
  }
  virtual void set_zero(int n, Dtype* x) const {
    caffe_gpu_set(n, Dtype(0), x);
  }
  virtual const Dtype* data(const Blob<Dtype>& blob) const {
    return blob.gpu_data();
  }
  virtual const Dtype* diff(const Blob<Dtype>& blob) const {
    return blob.gpu_diff();
  }
  virtual Dtype* mutable_data(Blob<Dtype>* blob) const {
    return blob->mutable_gpu_data();
  }
  virtual Dtype* mutable_diff(Blob<Dtype>* blob) const {
    return blob->mutable_gpu_diff();
  }
};

}  // namespace

template <typename Dtype>
const ApproxDropoutOps<Dtype>& ApproxDropoutGpuOps() {
  static const GpuOps<Dtype> ops;
  return ops;
}

template const ApproxDropoutOps<float>& ApproxDropoutGpuOps<float>();
template const ApproxDropoutOps<double>& ApproxDropoutGpuOps<double>();

}  // namespace caffe
