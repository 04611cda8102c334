#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>  // NOLINT(build/c++11)
#include <vector>

#include "caffe/filler.hpp"
#include "caffe/layers/approx_dropout_inner_product_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

// Calls f(index_start, length, compact_offset) for each block of the set;
// single-index blocks (ROW patterns) take a plain strided loop instead.
template <typename F>
inline void ForEachBlock(const BlockStride& s, F f) {
  const int blocks = s.num_blocks();
  if (s.block == 1) {
    for (int j = 0, index = s.first; j < blocks; ++j, index += s.step) {
      f(index, 1, j);
    }
    return;
  }
  for (int j = 0, offset = 0; j < blocks; ++j) {
    const int start = (s.first + j * s.step) * s.block;
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
};

int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }

// A compact buffer's memory on the device in use, taken only when an
// iteration's plan first uses that buffer.
template <typename Dtype>
Dtype* Buffer(Blob<Dtype>* blob, bool gpu) {
  return gpu ? blob->mutable_gpu_data() : blob->mutable_cpu_data();
}

}  // namespace

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const InnerProductParameter& ip = this->layer_param_.inner_product_param();
  const string& name = this->layer_param_.name();
  CHECK(!ip.transpose()) << "Layer " << name << ": inner_product_param."
      << "transpose: true is not supported by ApproxDropoutInnerProduct "
      << "(its patterns address rows of a num_output x K weight matrix)";
  N_ = ip.num_output();
  CHECK_GE(N_, 1) << "Layer " << name << ": inner_product_param.num_output "
                  << "must be positive";
  bias_term_ = ip.bias_term();
  const int axis = bottom[0]->CanonicalAxisIndex(ip.axis());
  K_ = bottom[0]->count(axis);
  param_ = this->layer_param_.approx_dropout_param();
  drops_outputs_ = param_.pattern() == ApproxDropoutParameter_Pattern_ROW &&
                   param_.side() == ApproxDropoutParameter_Side_OUTPUT;
  diagonal_ = param_.pattern() == ApproxDropoutParameter_Pattern_TILE &&
              param_.tile_order() == ApproxDropoutParameter_TileOrder_DIAGONAL;
  const string where = "Layer " + name + ": approx_dropout_param.";
  if (param_.has_batch_slices()) {
    CHECK_GE(param_.batch_slices(), 1) << where << "batch_slices must be >= 1 "
        << "(1 is one pattern for the whole batch), got "
        << param_.batch_slices();
    CHECK_LE(param_.batch_slices(), 1u << 20) << where << "batch_slices ("
        << param_.batch_slices() << ") is absurdly large";
    batch_slices_ = static_cast<int>(param_.batch_slices());
  } else {
    // Measured on the CPU (scripts/results/mlp_slices): ROW keeps 90 % of
    // its one-pattern speed with 2 slices, TILE, whose slices each gather
    // their own tiles of W, with none.
    batch_slices_ =
        param_.pattern() == ApproxDropoutParameter_Pattern_TILE ? 1 : 2;
  }
  if (param_.pattern() == ApproxDropoutParameter_Pattern_TILE) {
    CHECK(param_.side() == ApproxDropoutParameter_Side_OUTPUT) << where
        << "side: INPUT applies to pattern: ROW only (TILE drops weight "
        << "tiles, not a side)";
    CHECK_GE(param_.tile_height(), 1) << where << "tile_height must be >= 1";
    CHECK_GE(param_.tile_width(), 1) << where << "tile_width must be >= 1";
    CHECK_LE(param_.tile_height(), N_) << where << "tile_height ("
        << param_.tile_height() << ") is larger than the weight matrix's "
        << "num_output (" << N_ << ")";
    CHECK_LE(param_.tile_width(), K_) << where << "tile_width ("
        << param_.tile_width() << ") is larger than the weight matrix's "
        << "input size K (" << K_ << ")";
  } else {
    CHECK(!param_.has_tile_order()) << where << "tile_order applies to "
        << "pattern: TILE only";
  }
  sampler_.reset(new DropoutPatternSampler(param_, units(), name));

  if (this->blobs_.size() > 0) {
    LOG(INFO) << "Skipping parameter initialization";
  } else {
    this->blobs_.resize(bias_term_ ? 2 : 1);
    vector<int> weight_shape(2);
    weight_shape[0] = N_;
    weight_shape[1] = K_;
    this->blobs_[0].reset(new Blob<Dtype>(weight_shape));
    shared_ptr<Filler<Dtype> > weight_filler(GetFiller<Dtype>(
        ip.weight_filler()));
    weight_filler->Fill(this->blobs_[0].get());
    if (bias_term_) {
      vector<int> bias_shape(1, N_);
      this->blobs_[1].reset(new Blob<Dtype>(bias_shape));
      shared_ptr<Filler<Dtype> > bias_filler(GetFiller<Dtype>(
          ip.bias_filler()));
      bias_filler->Fill(this->blobs_[1].get());
    }
  }
  this->param_propagate_down_.resize(this->blobs_.size(), true);
  // A pattern writes only the kept part of the weight gradient. Pages of a
  // never-written diff stay unmapped until first touched, so without this the
  // first iterations pay page faults that a dense layer pays once (and that
  // `caffe time`, which never clears diffs, would count).
  if (Caffe::mode() == Caffe::CPU) {
    for (int i = 0; i < this->blobs_.size(); ++i) {
      caffe_set(this->blobs_[i]->count(), Dtype(0),
                this->blobs_[i]->mutable_cpu_diff());
    }
  }
}

template <typename Dtype>
int ApproxDropoutInnerProductLayer<Dtype>::units() const {
  if (param_.pattern() == ApproxDropoutParameter_Pattern_TILE) {
    const int th = param_.tile_height(), tw = param_.tile_width();
    return ((N_ + th - 1) / th) * ((K_ + tw - 1) / tw);
  }
  return param_.side() == ApproxDropoutParameter_Side_INPUT ? K_ : N_;
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const int axis = bottom[0]->CanonicalAxisIndex(
      this->layer_param_.inner_product_param().axis());
  CHECK_EQ(K_, bottom[0]->count(axis)) << "Layer "
      << this->layer_param_.name() << ": input size incompatible with "
      << "inner product parameters";
  M_ = bottom[0]->count(0, axis);
  vector<int> top_shape = bottom[0]->shape();
  top_shape.resize(axis + 1);
  top_shape[axis] = N_;
  top[0]->Reshape(top_shape);
  if (top.size() > 1) {
    vector<int> pattern_shape(2);
    pattern_shape[0] = batch_slices_;
    pattern_shape[1] = 2;
    top[1]->Reshape(pattern_shape);
  }
  // Compact operands at their largest (dp = 1): the slices' compact x (y)
  // lie in their own rows' share, and the patterns of one iteration keep
  // disjoint parts of W. Memory is taken only when a pattern first needs a
  // buffer, never per iteration.
  x_buf_.Reshape(vector<int>(1, M_ * K_));
  y_buf_.Reshape(vector<int>(1, M_ * N_));
  w_buf_.Reshape(vector<int>(1, N_ * K_));
  dw_buf_.Reshape(vector<int>(1, N_ * K_));
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::FixPattern(int dp, int b) {
  CHECK_GE(dp, 1) << "FixPattern: dp must be >= 1";
  CHECK_LE(dp, units()) << "FixPattern: dp must be <= " << units();
  CHECK(b >= 0 && b < dp) << "FixPattern: b must be in [0, dp)";
  fixed_ = true;
  fixed_pattern_.dp = dp;
  fixed_pattern_.b = b;
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::PlanGroups(
    const DropoutPattern& p, PatternClass* cls) const {
  vector<Group>& groups = cls->groups;
  groups.clear();
  const BlockStride all_out = BlockStride::All(N_);
  const BlockStride all_in = BlockStride::All(K_);
  if (param_.pattern() == ApproxDropoutParameter_Pattern_TILE) {
    const int th = param_.tile_height(), tw = param_.tile_width();
    const int R = (N_ + th - 1) / th, C = (K_ + tw - 1) / tw;
    for (int g = 0; g < std::min(p.dp, C); ++g) {
      // The kept tiles whose column c has c % dp == g: one GEMM.
      Group group;
      const BlockStride in = {g, p.dp, tw, K_};
      group.in = in;
      if (diagonal_) {
        // (r + c) % dp == b: rows r with r % dp == (b - g) mod dp.
        const int r0 = ((p.b - g) % p.dp + p.dp) % p.dp;
        if (r0 >= R) continue;
        const BlockStride out = {r0, p.dp, th, N_};
        group.out = out;
      } else {
        // (r C + c) % dp == b: in tile row r the kept columns are
        // c = g, g + dp, ... with g = (b - r C) mod dp; the rows sharing one
        // g form an arithmetic progression of step dp / gcd(C mod dp, dp).
        const int row_step = p.dp / gcd(C % p.dp, p.dp);
        int r0 = 0;
        while (r0 < std::min(R, row_step) &&
               ((p.b - r0 * C) % p.dp + p.dp) % p.dp != g) {
          ++r0;
        }
        if (r0 >= std::min(R, row_step)) continue;
        const BlockStride out = {r0, row_step, th, N_};
        group.out = out;
      }
      groups.push_back(group);
    }
  } else if (param_.side() == ApproxDropoutParameter_Side_INPUT) {
    Group group;
    const BlockStride in = {p.b, p.dp, 1, K_};
    group.out = all_out;
    group.in = in;
    groups.push_back(group);
  } else {
    Group group;
    const BlockStride out = {p.b, p.dp, 1, N_};
    group.out = out;
    group.in = all_in;
    groups.push_back(group);
  }
  int x_cols = 0, y_cols = 0, w_off = 0;
  for (Group& g : groups) {
    const int nout = g.out.size(), nin = g.in.size();
    g.w_view = g.in.all() && (g.out.block == 1 || g.out.step == 1);
    // In place, rows out[0], out[0] + step, ... of W; else a dense buffer.
    g.ldw = g.w_view ? (g.out.block == 1 ? g.out.step : 1) * K_ : nin;
    g.x_cols_before = x_cols;
    g.y_cols_before = y_cols;
    g.w_offset = w_off;
    if (!g.in.all()) x_cols += nin;
    if (!g.out.all()) y_cols += nout;
    if (!g.w_view) w_off += nout * nin;
  }
  cls->out_covered = groups.size() == 1 && groups[0].out.all();
  cls->in_covered = groups.size() == 1 && groups[0].in.all();
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::PlanIteration() {
  const int slices = num_slices_ = slice_patterns_.size();
  const int dp = slice_patterns_[0].dp;
  // One dp for all slices (shared-dp sampling): slice s and s + dp share a
  // pattern, and distinct patterns keep disjoint units, so their gathered
  // parts of W fit in one N x K buffer together.
  // classes_ only grows, and its vectors keep their capacity, so planning
  // allocates nothing once the largest plan has been seen.
  num_classes_ = 0;
  int w_base = 0;
  out_covered_ = in_covered_ = true;
  for (int c = 0; c < std::min(slices, dp); ++c) {
    if (static_cast<int>(classes_.size()) <= num_classes_) {
      classes_.resize(num_classes_ + 1);
    }
    PatternClass& cls = classes_[num_classes_];
    cls.pattern = slice_patterns_[c];
    cls.slices.clear();
    for (int s = c; s < slices; s += dp) {
      if (SliceBegin(s + 1) > SliceBegin(s)) cls.slices.push_back(s);
    }
    if (cls.slices.empty()) continue;
    PlanGroups(cls.pattern, &cls);
    cls.w_base = w_base;
    for (const Group& g : cls.groups) {
      if (!g.w_view) w_base += g.out.size() * g.in.size();
    }
    out_covered_ = out_covered_ && cls.out_covered;
    in_covered_ = in_covered_ && cls.in_covered;
    ++num_classes_;
  }
  CHECK_LE(w_base, N_ * K_) << "approx-dropout plan: patterns overlap";
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::ForwardWith(
    const ApproxDropoutOps<Dtype>& ops, bool gpu,
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  if (this->phase_ == TRAIN) {
    if (fixed_) {
      DropoutPatternSampler::SliceOffsets(fixed_pattern_, batch_slices_,
                                          &slice_patterns_);
    } else {
      sampler_->SampleSlices(batch_slices_, true, &slice_patterns_);
    }
    scale_ = sampler_->scale();
  } else {
    const DropoutPattern all = {1, 0};
    DropoutPatternSampler::SliceOffsets(all, 1, &slice_patterns_);
    scale_ = 1;
  }
  pattern_ = slice_patterns_[0];
  PlanIteration();
  if (top.size() > 1) {
    // TEST phase: every row of the S x 2 top reports dp = 1, b = 0.
    Dtype* observed = top[1]->mutable_cpu_data();
    for (int s = 0; s < batch_slices_; ++s) {
      const DropoutPattern& p = slice_patterns_[std::min(s, num_slices_ - 1)];
      observed[2 * s] = p.dp;
      observed[2 * s + 1] = p.b;
    }
  }
  const Dtype* x = gpu ? bottom[0]->gpu_data() : bottom[0]->cpu_data();
  const Dtype* w = gpu ? this->blobs_[0]->gpu_data()
                       : this->blobs_[0]->cpu_data();
  Dtype* y = gpu ? top[0]->mutable_gpu_data() : top[0]->mutable_cpu_data();
  const Dtype* bias = !bias_term_ ? NULL : gpu ? this->blobs_[1]->gpu_data()
                                               : this->blobs_[1]->cpu_data();
  if (!out_covered_) ops.set_zero(M_ * N_, y);
  for (int c = 0; c < num_classes_; ++c) {
    const PatternClass& cls = classes_[c];
    for (const Group& g : cls.groups) {
      if (g.w_view) continue;
      Dtype* buf = Buffer(&w_buf_, gpu) + cls.w_base + g.w_offset;
      ops.gather(g.out.size(), g.out, g.in, w, K_, buf);
    }
    for (int s : cls.slices) {
      const int m0 = SliceBegin(s), rows = SliceBegin(s + 1) - m0;
      const BlockStride row_map = BlockStride::All(rows);
      const Dtype* xs = x + m0 * K_;
      Dtype* ys = y + m0 * N_;
      for (const Group& g : cls.groups) {
        const int nout = g.out.size(), nin = g.in.size();
        const Dtype* xg = xs;
        int ldx = K_;
        if (!g.in.all()) {
          Dtype* buf = Buffer(&x_buf_, gpu) + m0 * K_ + rows * g.x_cols_before;
          ops.gather(rows, row_map, g.in, xs, K_, buf);
          xg = buf;
          ldx = nin;
        }
        const Dtype* wg = g.w_view ? w + g.out[0] * K_
            : (gpu ? w_buf_.gpu_data() : w_buf_.cpu_data())
              + cls.w_base + g.w_offset;
        if (g.out.all()) {
          ops.gemm(false, true, rows, nout, nin, scale_, xg, ldx, wg, g.ldw,
                   Dtype(0), ys, N_);
        } else {
          Dtype* yg = Buffer(&y_buf_, gpu) + m0 * N_ + rows * g.y_cols_before;
          ops.gemm(false, true, rows, nout, nin, scale_, xg, ldx, wg, g.ldw,
                   Dtype(0), yg, nout);
          ops.scatter(rows, row_map, g.out, yg, ys, N_, false);
        }
      }
      // RDP drops whole output neurons, bias included.
      if (bias && drops_outputs_) {
        ops.add_bias(rows, cls.groups[0].out, scale_, bias, ys, N_);
      }
    }
  }
  if (bias && !drops_outputs_) {
    ops.add_bias(M_, BlockStride::All(N_), Dtype(1), bias, y, N_);
  }
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::BackwardWith(
    const ApproxDropoutOps<Dtype>& ops, bool gpu,
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const Dtype* dy = gpu ? top[0]->gpu_diff() : top[0]->cpu_diff();
  const Dtype* x = gpu ? bottom[0]->gpu_data() : bottom[0]->cpu_data();
  const Dtype* w = gpu ? this->blobs_[0]->gpu_data()
                       : this->blobs_[0]->cpu_data();
  const bool weight_grad = this->param_propagate_down_[0];
  const bool bias_grad = bias_term_ && this->param_propagate_down_[1];
  Dtype* dw = weight_grad ? (gpu ? this->blobs_[0]->mutable_gpu_diff()
                                 : this->blobs_[0]->mutable_cpu_diff()) : NULL;
  Dtype* db = bias_grad ? (gpu ? this->blobs_[1]->mutable_gpu_diff()
                               : this->blobs_[1]->mutable_cpu_diff()) : NULL;
  Dtype* dx = NULL;
  if (propagate_down[0]) {
    dx = gpu ? bottom[0]->mutable_gpu_diff() : bottom[0]->mutable_cpu_diff();
    if (!in_covered_) ops.set_zero(M_ * K_, dx);
  }
  for (int c = 0; c < num_classes_; ++c) {
    const PatternClass& cls = classes_[c];
    bool first_slice = true;
    for (int s : cls.slices) {
      const int m0 = SliceBegin(s), rows = SliceBegin(s + 1) - m0;
      const BlockStride row_map = BlockStride::All(rows);
      const Dtype* dys = dy + m0 * N_;
      const Dtype* xs = x + m0 * K_;
      for (const Group& g : cls.groups) {
        const int nout = g.out.size(), nin = g.in.size();
        const Dtype* dyg = dys;
        int lddy = N_;
        if (!g.out.all()) {
          Dtype* buf = Buffer(&y_buf_, gpu) + m0 * N_ + rows * g.y_cols_before;
          ops.gather(rows, row_map, g.out, dys, N_, buf);
          dyg = buf;
          lddy = nout;
        }
        // The compact x of this slice and group, as gathered by the forward.
        Dtype* x_compact = g.in.all() ? NULL
            : Buffer(&x_buf_, gpu) + m0 * K_ + rows * g.x_cols_before;
        const Dtype* xg = g.in.all() ? xs : x_compact;
        const int ldx = g.in.all() ? K_ : nin;
        if (weight_grad) {
          if (g.w_view) {
            ops.gemm(true, false, nout, nin, rows, scale_, dyg, lddy, xg, ldx,
                     Dtype(1), dw + g.out[0] * K_, g.ldw);
          } else {
            ops.gemm(true, false, nout, nin, rows, scale_, dyg, lddy, xg, ldx,
                     first_slice ? Dtype(0) : Dtype(1),
                     Buffer(&dw_buf_, gpu) + cls.w_base + g.w_offset, nin);
          }
        }
        if (db && drops_outputs_) {
          ops.add_column_sums(rows, nout, scale_, dyg, lddy, db + g.out[0],
                              g.out.all() ? 1 : g.out.step);
        }
        if (dx) {
          // W[out, in], in place or as gathered by the forward pass.
          const Dtype* wg = g.w_view ? w + g.out[0] * K_
              : (gpu ? w_buf_.gpu_data() : w_buf_.cpu_data())
                + cls.w_base + g.w_offset;
          if (cls.in_covered) {
            ops.gemm(false, false, rows, K_, nout, scale_, dyg, lddy, wg,
                     g.ldw, Dtype(0), dx + m0 * K_, K_);
          } else {
            // x_compact has served the weight gradient; reuse it for dx.
            ops.gemm(false, false, rows, nin, nout, scale_, dyg, lddy, wg,
                     g.ldw, Dtype(0), x_compact, nin);
            ops.scatter(rows, row_map, g.in, x_compact, dx + m0 * K_, K_,
                        false);
          }
        }
      }
      first_slice = false;
    }
    if (weight_grad) {
      for (const Group& g : cls.groups) {
        if (g.w_view) continue;
        const Dtype* dwg = Buffer(&dw_buf_, gpu) + cls.w_base + g.w_offset;
        ops.scatter(g.out.size(), g.out, g.in, dwg, dw, K_, true);
      }
    }
  }
  if (db && !drops_outputs_) {
    ops.add_column_sums(M_, N_, Dtype(1), dy, N_, db, 1);
  }
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  ForwardWith(CpuOps<Dtype>(), false, bottom, top);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  BackwardWith(CpuOps<Dtype>(), false, top, propagate_down, bottom);
}

#ifdef CPU_ONLY
STUB_GPU(ApproxDropoutInnerProductLayer);
#endif

INSTANTIATE_CLASS(ApproxDropoutInnerProductLayer);
REGISTER_LAYER_CLASS(ApproxDropoutInnerProduct);

}  // namespace caffe
