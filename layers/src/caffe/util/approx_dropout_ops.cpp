#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <vector>

#include "caffe/util/approx_dropout_ops.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

// Calls f(index_start, length, compact_offset) for each block of the set;
// single-index blocks (ROW patterns) take a plain strided loop instead.
template <typename F>
inline void ForEachBlock(const BlockStride& s, F f) {
  const int blocks = s.num_blocks();
  if (s.block == 1) {
    for (int j = 0, index = s.offset + s.first; j < blocks;
         ++j, index += s.step) {
      f(index, 1, j);
    }
    return;
  }
  for (int j = 0, offset = 0; j < blocks; ++j) {
    const int start = s.offset + (s.first + j * s.step) * s.block;
    const int len = std::min(s.block, s.dim - start);
    f(start, len, offset);
    offset += len;
  }
}

inline void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n,
    int k, float alpha, const float* a, int lda, const float* b, int ldb,
    float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c,
              ldc);
}

inline void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n,
    int k, double alpha, const double* a, int lda, const double* b, int ldb,
    double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c,
              ldc);
}

// The CPUs this process may run on: its affinity mask, capped by a cgroup
// v2 CPU quota when one is set (containers), not the host's core count.
int UsableCpus() {
  static const int cpus = [] {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    std::ifstream quota_file("/sys/fs/cgroup/cpu.max");
    std::string quota;
    int64_t period = 0;
    if (quota_file >> quota >> period && quota != "max" && period > 0) {
      const int64_t q = std::atoll(quota.c_str());
      if (q > 0) n = std::min<int64_t>(n, (q + period - 1) / period);
    }
    return std::max(1, n);
  }();
  return cpus;
}

// Runs f(begin, end) over rows [0, rows), split across the usable CPUs when
// the copy is large. Gathers and scatters move up to N K / dp values; run on
// one core they leave OpenBLAS's other threads idle. (std::thread, not
// OpenMP: OpenMP's spinning workers slow OpenBLAS's threads down on small
// machines. Starting a thread costs tens of microseconds against the
// milliseconds a copy of 2^18 values or more takes, so there is no pool.)
template <typename F>
void ParallelRows(int rows, int64_t work, F f) {
  const int threads = work < (1 << 18) ? 1 : std::min(UsableCpus(), rows);
  if (threads <= 1) {
    f(0, rows);
    return;
  }
  const int chunk = (rows + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    pool.emplace_back(f, std::min(rows, t * chunk),
                      std::min(rows, (t + 1) * chunk));
  }
  f(0, std::min(rows, chunk));
  for (std::thread& thread : pool) thread.join();
}

template <typename Dtype>
class CpuOps : public ApproxDropoutOps<Dtype> {
 public:
  virtual void gemm(bool trans_a, bool trans_b, int m, int n, int k,
      Dtype alpha, const Dtype* a, int lda, const Dtype* b, int ldb,
      Dtype beta, Dtype* c, int ldc) const {
    if (m == 0 || n == 0) return;
    cblas_gemm(trans_a ? CblasTrans : CblasNoTrans,
               trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
               b, ldb, beta, c, ldc);
  }
  virtual void add_column_sums(int m, int n, Dtype alpha, const Dtype* a,
      int lda, Dtype* y, int incy) const {
    for (int r = 0; r < m; ++r) {
      const Dtype* row = a + r * lda;
      for (int i = 0; i < n; ++i) y[i * incy] += alpha * row[i];
    }
  }
  virtual void gather(int rows, const BlockStride& row_map,
      const BlockStride& cols, const Dtype* src, int ld, Dtype* dst) const {
    const int nc = cols.size();
    ParallelRows(rows, int64_t(rows) * nc, [&](int begin, int end) {
      for (int r = begin; r < end; ++r) {
        const Dtype* s = src + row_map[r] * ld;
        Dtype* d = dst + r * nc;
        ForEachBlock(cols, [&](int start, int len, int offset) {
          for (int i = 0; i < len; ++i) d[offset + i] = s[start + i];
        });
      }
    });
  }
  virtual void scatter(int rows, const BlockStride& row_map,
      const BlockStride& cols, const Dtype* src, Dtype* dst, int ld,
      bool accumulate) const {
    const int nc = cols.size();
    ParallelRows(rows, int64_t(rows) * nc, [&](int begin, int end) {
      for (int r = begin; r < end; ++r) {
        const Dtype* s = src + r * nc;
        Dtype* d = dst + row_map[r] * ld;
        ForEachBlock(cols, [&](int start, int len, int offset) {
          if (accumulate) {
            for (int i = 0; i < len; ++i) d[start + i] += s[offset + i];
          } else {
            for (int i = 0; i < len; ++i) d[start + i] = s[offset + i];
          }
        });
      }
    });
  }
  virtual void add_bias(int rows, const BlockStride& cols, Dtype alpha,
      const Dtype* bias, Dtype* dst, int ld) const {
    for (int r = 0; r < rows; ++r) {
      Dtype* d = dst + r * ld;
      ForEachBlock(cols, [&](int start, int len, int) {
        for (int i = start; i < start + len; ++i) d[i] += alpha * bias[i];
      });
    }
  }
  virtual void set_zero(int n, Dtype* x) const { caffe_set(n, Dtype(0), x); }
  virtual const Dtype* data(const Blob<Dtype>& blob) const {
    return blob.cpu_data();
  }
  virtual const Dtype* diff(const Blob<Dtype>& blob) const {
    return blob.cpu_diff();
  }
  virtual Dtype* mutable_data(Blob<Dtype>* blob) const {
    return blob->mutable_cpu_data();
  }
  virtual Dtype* mutable_diff(Blob<Dtype>* blob) const {
    return blob->mutable_cpu_diff();
  }
};

}  // namespace

template <typename Dtype>
const ApproxDropoutOps<Dtype>& ApproxDropoutCpuOps() {
  static const CpuOps<Dtype> ops;
  return ops;
}

template const ApproxDropoutOps<float>& ApproxDropoutCpuOps<float>();
template const ApproxDropoutOps<double>& ApproxDropoutCpuOps<double>();

}  // namespace caffe
