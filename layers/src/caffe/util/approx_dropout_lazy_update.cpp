#include <algorithm>
#include <climits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "caffe/layers/approx_dropout_inner_product_layer.hpp"
#include "caffe/sgd_solvers.hpp"
#include "caffe/util/approx_dropout_lazy_update.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

// Iterations whose rates are kept; after that many the deferred cells are
// brought up to date and the log starts again (amortised: one pass per
// kRateLog iterations).
const int kRateLog = 1000;
// Cells per parameter at most: the deferred state is one integer per cell.
const int kMaxCells = 1 << 16;

// Step() starts with every diff it uses zero (Caffe's ClearParamDiffs).
template <typename Dtype>
void ZeroDiff(Blob<Dtype>* blob) {
  if (Caffe::mode() == Caffe::GPU) {
#ifndef CPU_ONLY
    caffe_gpu_set(blob->count(), Dtype(0), blob->mutable_gpu_diff());
#else
    NO_GPU;
#endif
  } else {
    caffe_set(blob->count(), Dtype(0), blob->mutable_cpu_diff());
  }
}

}  // namespace

// ---- ApproxDropoutLazyParam -------------------------------------------------

template <typename Dtype>
ApproxDropoutLazyParam<Dtype>::ApproxDropoutLazyParam(
    ApproxDropoutLazyUpdate<Dtype>* update, Blob<Dtype>* param,
    Blob<Dtype>* history, const std::string& name, int cell_rows,
    int cell_cols, Dtype lr_mult, Dtype decay_mult)
    : update_(update), param_(param), history_(history), name_(name),
      lr_mult_(lr_mult), decay_mult_(decay_mult), products_now_(-1) {
  CHECK_EQ(param->count(), history->count()) << name;
  rows_ = param->num_axes() > 1 ? param->shape(0) : param->count();
  cols_ = rows_ > 0 ? param->count() / rows_ : 1;
  cell_rows_ = std::max(1, std::min(cell_rows, rows_));
  cell_cols_ = std::max(1, std::min(cell_cols, cols_));
  for (;;) {
    row_cells_ = (rows_ + cell_rows_ - 1) / cell_rows_;
    col_cells_ = (cols_ + cell_cols_ - 1) / cell_cols_;
    if (static_cast<int64_t>(row_cells_) * col_cells_ <= kMaxCells) break;
    if (row_cells_ >= col_cells_) {
      cell_rows_ *= 2;
    } else {
      cell_cols_ *= 2;
    }
  }
  stamps_.assign(num_cells(), 0);
  written_.assign(num_cells(), 0);
  row_list_.reserve(row_cells_);
  col_list_.reserve(col_cells_);
  all_cols_.resize(col_cells_);
  for (int c = 0; c < col_cells_; ++c) all_cols_[c] = c;
  work_.reserve(num_cells());
  products_.reserve(kRateLog + 1);
  product_values_.resize(4 * (kRateLog + 1));
  work_device_.Reshape(std::vector<int>(1, 5 * num_cells()));
  product_device_.Reshape(std::vector<int>(1, 4 * (kRateLog + 1)));
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::CellsOf(const BlockStride& set, int cell,
                                            int num_cells,
                                            std::vector<int>* out) {
  out->clear();
  const int n = set.size();
  if (n == 0) return;
  CHECK_LE(set.dim, num_cells * cell) << "a set larger than the parameter";
  if (set.contiguous()) {
    for (int c = set[0] / cell; c <= set[n - 1] / cell; ++c) out->push_back(c);
    return;
  }
  for (int b = 0; b < set.num_blocks(); ++b) {
    const int begin = set.offset + (set.first + b * set.step) * set.block;
    const int end = std::min(begin + set.block, set.dim);
    for (int c = begin / cell; c <= (end - 1) / cell; ++c) {
      if (out->empty() || c > out->back()) out->push_back(c);
    }
  }
  CHECK_LE(out->size(), static_cast<size_t>(num_cells));
}

template <typename Dtype>
int ApproxDropoutLazyParam<Dtype>::ProductFor(int stamp) {
  const int now = update_->now();
  const int k = now - stamp;
  CHECK_GT(k, 0);
  if (products_now_ != now) {
    products_.clear();
    products_now_ = now;
  }
  // products_[j - 1] = A_{now-1} ... A_{now-j}; the next multiplies by
  // A_{now-j-1} on the right (it acts first).
  while (static_cast<int>(products_.size()) < k) {
    const int j = products_.size();
    const LazyStepMatrix a = update_->StepMatrix(now - j - 1, lr_mult_,
                                                 decay_mult_);
    if (j == 0) {
      products_.push_back(a);
    } else {
      const LazyStepMatrix& p = products_[j - 1];
      LazyStepMatrix q;
      q.hh = p.hh * a.hh + p.hw * a.wh;
      q.hw = p.hh * a.hw + p.hw * a.ww;
      q.wh = p.wh * a.hh + p.ww * a.wh;
      q.ww = p.wh * a.hw + p.ww * a.ww;
      products_.push_back(q);
    }
    // The kernels' copy, rounded once to Dtype.
    const LazyStepMatrix& q = products_.back();
    Dtype* v = &product_values_[4 * j];
    v[0] = q.hh;
    v[1] = q.hw;
    v[2] = q.wh;
    v[3] = q.ww;
  }
  return k - 1;
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::QueueCatchUp(int r,
                                                 const std::vector<int>& cols) {
  const int now = update_->now();
  int* stamps = &stamps_[r * col_cells_];
  const int n = cols.size();
  for (int i = 0; i < n; ++i) {
    const int c = cols[i];
    const int s = stamps[c];
    if (s >= now) continue;
    int end = c + 1;
    while (i + 1 < n && cols[i + 1] == end && stamps[end] == s) {
      ++i;
      ++end;
    }
    const Work w = {r * cell_rows_, std::min((r + 1) * cell_rows_, rows_),
                    c * cell_cols_, std::min(end * cell_cols_, cols_),
                    ProductFor(s)};
    work_.push_back(w);
    std::fill(stamps + c, stamps + end, now);
  }
}

template <typename Dtype>
bool ApproxDropoutLazyParam<Dtype>::ListCells(const BlockStride& rows,
                                              const BlockStride& cols) {
  if (!update_->active()) return false;
  CellsOf(rows, cell_rows_, row_cells_, &row_list_);
  CellsOf(cols, cell_cols_, col_cells_, &col_list_);
  return true;
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::CatchUp(const BlockStride& rows,
                                            const BlockStride& cols) {
  if (!ListCells(rows, cols)) return;
  for (int r : row_list_) QueueCatchUp(r, col_list_);
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::FinishCatchUp() {
  Flush(false, Dtype(0));
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::MarkWritten(const BlockStride& rows,
                                                const BlockStride& cols) {
  if (!ListCells(rows, cols)) return;
  for (int r : row_list_) {
    char* written = &written_[r * col_cells_];
    for (int c : col_list_) written[c] = 1;
  }
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::Begin(int iter) {
  std::fill(stamps_.begin(), stamps_.end(), iter);
  std::fill(written_.begin(), written_.end(), 0);
  products_now_ = -1;
  ZeroDiff(param_);
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::SyncAll() {
  for (int r = 0; r < row_cells_; ++r) QueueCatchUp(r, all_cols_);
  Flush(false, Dtype(0));
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::Step(Dtype rate) {
  // Written cells were read by the forward pass, so they are current; a cell
  // written but not read (no layer of ours does that) catches up first.
  const int now = update_->now();
  CHECK(work_.empty());
  for (int r = 0; r < row_cells_; ++r) {
    int* stamps = &stamps_[r * col_cells_];
    char* written = &written_[r * col_cells_];
    for (int c = 0; c < col_cells_; ++c) {
      if (!written[c]) continue;
      const int s = stamps[c];
      int end = c + 1;
      while (end < col_cells_ && written[end] && stamps[end] == s) ++end;
      const Work w = {r * cell_rows_, std::min((r + 1) * cell_rows_, rows_),
                      c * cell_cols_, std::min(end * cell_cols_, cols_),
                      s < now ? ProductFor(s) : -1};
      work_.push_back(w);
      std::fill(stamps + c, stamps + end, now + 1);
      std::fill(written + c, written + end, 0);
      c = end - 1;
    }
  }
  Flush(true, rate * lr_mult_);
}

template <typename Dtype>
void ApproxDropoutLazyParam<Dtype>::Flush(bool step, Dtype local_rate) {
  static_assert(sizeof(Work) == 5 * sizeof(int), "kernels read Work as 5 ints");
  if (work_.empty()) return;
  double entries = 0;
  for (const Work& w : work_) {
    entries += static_cast<double>(w.row1 - w.row0) * (w.col1 - w.col0);
  }
  const bool gpu = Caffe::mode() == Caffe::GPU;
  const int* work = reinterpret_cast<const int*>(work_.data());
  const Dtype* products = product_values_.data();
  Dtype *w, *h, *g;
  if (gpu) {
#ifndef CPU_ONLY
    // Only the queue's and the products' used lengths travel (products_ is
    // for `now`).
    const int n = products_now_ == update_->now() ? products_.size() : 0;
    int* device_work = work_device_.mutable_gpu_data();
    caffe_gpu_memcpy(sizeof(Work) * work_.size(), work, device_work);
    Dtype* device_products = product_device_.mutable_gpu_data();
    if (n > 0) {
      caffe_gpu_memcpy(sizeof(Dtype) * 4 * n, products, device_products);
    }
    work = device_work;
    products = device_products;
    w = param_->mutable_gpu_data();
    h = history_->mutable_gpu_data();
    g = param_->mutable_gpu_diff();
#else
    NO_GPU;
#endif
  } else {
    w = param_->mutable_cpu_data();
    h = history_->mutable_cpu_data();
    g = param_->mutable_cpu_diff();
  }
  LazyUpdateKernels<Dtype>::Run(gpu, step, update_->nesterov_, work_.size(),
      work, products, cols_, w, h, g, update_->momentum_, local_rate,
      update_->weight_decay_ * decay_mult_);
  (step ? update_->stepped_ : update_->caught_up_) += entries;
  work_.clear();
}

// ---- a layer's plan, in cells ---------------------------------------------

template <typename Dtype>
void ApproxDropoutLazyVisit(const ApproxDropoutPlan& plan, bool drops_outputs,
    int num_output, bool written, ApproxDropoutLazyParam<Dtype>* w,
    ApproxDropoutLazyParam<Dtype>* b) {
  if (!w && !b) return;
  const BlockStride one = BlockStride::All(1);
  for (int c = 0; c < plan.num_classes(); ++c) {
    for (const ApproxDropoutGroup& g : plan.cls(c).groups) {
      if (w) written ? w->MarkWritten(g.out, g.in) : w->CatchUp(g.out, g.in);
      if (b && drops_outputs) {
        written ? b->MarkWritten(g.out, one) : b->CatchUp(g.out, one);
      }
    }
  }
  if (b && !drops_outputs) {
    const BlockStride all = BlockStride::All(num_output);
    written ? b->MarkWritten(all, one) : b->CatchUp(all, one);
  }
  if (!written) {
    if (w) w->FinishCatchUp();
    if (b) b->FinishCatchUp();
  }
}

template void ApproxDropoutLazyVisit<float>(const ApproxDropoutPlan&, bool,
    int, bool, ApproxDropoutLazyParam<float>*, ApproxDropoutLazyParam<float>*);
template void ApproxDropoutLazyVisit<double>(const ApproxDropoutPlan&, bool,
    int, bool, ApproxDropoutLazyParam<double>*,
    ApproxDropoutLazyParam<double>*);

void ApproxDropoutLazyCellSize(const ApproxDropoutShape& shape, bool drops,
    bool input_fine, bool input_single, bool bias, int* cell_rows,
    int* cell_cols) {
  const int fine_n = std::max(1, (shape.N + 127) / 128);
  const int fine_k = std::max(1, (shape.K + 127) / 128);
  int rows = shape.N, cols = shape.K;
  if (shape.tile) {
    rows = shape.tile_height;
    cols = shape.tile_width;
  } else if (shape.input_side) {
    if (drops) cols = shape.block_layout ? fine_k : 1;
  } else {
    if (drops) rows = shape.block_layout ? fine_n : 1;
    if (input_fine) cols = fine_k;
    if (input_single) cols = 1;
  }
  *cell_rows = rows;
  *cell_cols = bias ? 1 : cols;
}

// ---- ApproxDropoutLazyUpdate ------------------------------------------------

template <typename Dtype>
ApproxDropoutLazyUpdate<Dtype>::ApproxDropoutLazyUpdate(
    const SolverParameter& param, const std::string& solver_type,
    Net<Dtype>* net, const std::vector<shared_ptr<Blob<Dtype> > >& history)
    : mode_(STOCK), nesterov_(solver_type == "Nesterov"),
      active_(false), momentum_(param.momentum()),
      weight_decay_(param.weight_decay()), now_(0), log_begin_(0),
      stepped_(0), caught_up_(0) {
  const ApproxDropoutSolverParameter::Update update =
      param.approx_dropout_param().update();
  bool approximate = false;
  for (size_t i = 0; i < net->layers().size(); ++i) {
    approximate = approximate ||
        std::string(net->layers()[i]->type()).compare(0, 13, "ApproxDropout")
            == 0;
  }
  if (update == ApproxDropoutSolverParameter_Update_STOCK) {
    reason_ = "approx_dropout_param { update: STOCK }";
  } else if (update == ApproxDropoutSolverParameter_Update_AUTO &&
             !approximate) {
    reason_ = "no approximate dropout layer";
    return;  // a stock net: nothing to say
  } else if (solver_type != "SGD" && solver_type != "Nesterov") {
    reason_ = "solver type " + solver_type + " (deferring is exact for SGD "
              "and Nesterov only)";
  } else if (param.weight_decay() != 0 &&
             param.regularization_type() != "L2") {
    reason_ = "regularization_type " + param.regularization_type() +
              " (deferring is exact for L2 only)";
  } else if (param.clip_gradients() >= 0) {
    reason_ = "clip_gradients (scales every gradient by their joint norm)";
  } else if (param.iter_size() > 1) {
    reason_ = "iter_size > 1";
  } else if (param.debug_info()) {
    reason_ = "debug_info (prints every parameter each iteration)";
  } else if (param.snapshot_diff()) {
    reason_ = "snapshot_diff (snapshots Caffe's last update, kept in the diffs)";
  } else if (Caffe::solver_count() > 1) {
    reason_ = "several solvers (multi-GPU)";
  }
  if (!reason_.empty()) {
    LOG(INFO) << "approx-dropout: Caffe's own update for this solver: "
              << reason_;
    return;
  }
  mode_ = update == ApproxDropoutSolverParameter_Update_FUSED ? FUSED : LAZY;

  // Which layers use each learnable parameter (owners and sharers share the
  // data's memory), and whether all of them are ours.
  const std::vector<Blob<Dtype>*>& params = net->learnable_params();
  CHECK_EQ(params.size(), history.size());
  std::map<const void*, int> index;
  for (size_t i = 0; i < params.size(); ++i) {
    index[params[i]->data().get()] = i;
  }
  std::vector<std::vector<std::pair<int, int> > > users(params.size());
  for (size_t l = 0; l < net->layers().size(); ++l) {
    const std::vector<shared_ptr<Blob<Dtype> > >& blobs =
        net->layers()[l]->blobs();
    for (size_t j = 0; j < blobs.size(); ++j) {
      std::map<const void*, int>::const_iterator it =
          index.find(blobs[j]->data().get());
      if (it != index.end()) users[it->second].push_back(std::make_pair(l, j));
    }
  }
  std::string deferred, fused;
  for (size_t i = 0; i < params.size(); ++i) {
    bool lazy = mode_ == LAZY && !users[i].empty();
    int cell_rows = INT_MAX, cell_cols = INT_MAX;
    for (size_t u = 0; u < users[i].size() && lazy; ++u) {
      ApproxDropoutInnerProductLayer<Dtype>* layer =
          dynamic_cast<ApproxDropoutInnerProductLayer<Dtype>*>(
              net->layers()[users[i][u].first].get());
      // Every user must see the owner's rows x cols (share_mode PERMISSIVE
      // lets shapes differ when the counts agree).
      lazy = layer != NULL && users[i][u].second <= 1 &&
          net->layers()[users[i][u].first]->blobs()[users[i][u].second]
              ->shape() == params[i]->shape();
      if (!lazy) break;
      int r, c;
      layer->LazyCells(users[i][u].second, &r, &c);
      cell_rows = std::min(cell_rows, r);
      cell_cols = std::min(cell_cols, c);
    }
    const std::pair<int, int>& owner = users[i].empty()
        ? std::make_pair(-1, -1) : users[i][0];
    std::ostringstream name;
    if (owner.first >= 0) {
      name << net->layer_names()[owner.first] << "[" << owner.second << "]";
    } else {
      name << "param " << i;
    }
    const Dtype lr_mult = net->params_lr()[i];
    const Dtype decay_mult = net->params_weight_decay()[i];
    if (lazy) {
      shared_ptr<ApproxDropoutLazyParam<Dtype> > p(
          new ApproxDropoutLazyParam<Dtype>(this, params[i],
              history[i].get(), name.str(), cell_rows, cell_cols, lr_mult,
              decay_mult));
      lazy_.push_back(p);
      for (size_t u = 0; u < users[i].size(); ++u) {
        const Use use = {net->layers()[users[i][u].first].get(),
                         users[i][u].second, p.get()};
        uses_.push_back(use);
      }
      std::ostringstream cells;
      cells << " (" << p->num_cells() << " cells of " << p->cell_rows()
            << " x " << p->cell_cols() << ")";
      deferred += (deferred.empty() ? "" : ", ") + name.str() + cells.str();
    } else {
      const Dense d = {params[i], history[i].get(), lr_mult, decay_mult};
      dense_.push_back(d);
      fused += (fused.empty() ? "" : ", ") + name.str();
    }
  }
  rates_.reserve(kRateLog);
  LOG(INFO) << "approx-dropout: " << (mode_ == LAZY ? "deferred" : "fused")
            << " update: " << lazy_.size() << " parameter(s) cell by cell"
            << (deferred.empty() ? "" : ": " + deferred) << "; "
            << dense_.size() << " in one fused pass"
            << (fused.empty() ? "" : ": " + fused);
}

template <typename Dtype>
ApproxDropoutLazyUpdate<Dtype>::~ApproxDropoutLazyUpdate() {
  if (active_) Attach(false);
}

template <typename Dtype>
void ApproxDropoutLazyUpdate<Dtype>::Attach(bool on) {
  for (const Use& use : uses_) {
    static_cast<ApproxDropoutInnerProductLayer<Dtype>*>(use.layer)
        ->set_lazy_param(use.blob, on ? use.lazy : NULL);
  }
}

template <typename Dtype>
bool ApproxDropoutLazyUpdate<Dtype>::Begin(int iter) {
  if (mode_ == STOCK) return false;
  now_ = log_begin_ = iter;
  rates_.clear();
  for (size_t i = 0; i < lazy_.size(); ++i) lazy_[i]->Begin(iter);
  for (const Dense& d : dense_) ZeroDiff(d.param);
  active_ = true;
  Attach(true);
  return true;
}

template <typename Dtype>
LazyStepMatrix ApproxDropoutLazyUpdate<Dtype>::StepMatrix(
    int iter, Dtype lr_mult, Dtype decay_mult) const {
  CHECK(iter >= log_begin_ &&
        iter < log_begin_ + static_cast<int>(rates_.size()))
      << "approx-dropout: no rate logged for iteration " << iter;
  // The same Dtype products as SGDSolver's local_rate and local_decay.
  const double r = static_cast<Dtype>(rates_[iter - log_begin_] * lr_mult);
  const double decay = static_cast<Dtype>(weight_decay_ * decay_mult);
  const double mu = momentum_;
  LazyStepMatrix a;
  a.hh = mu;
  a.hw = r * decay;
  if (nesterov_) {
    a.wh = -mu * mu;
    a.ww = 1 - (1 + mu) * r * decay;
  } else {
    a.wh = -mu;
    a.ww = 1 - r * decay;
  }
  return a;
}

template <typename Dtype>
bool ApproxDropoutLazyUpdate<Dtype>::Apply(Dtype rate, int iter) {
  if (!active_) return false;
  CHECK_EQ(iter, now_) << "approx-dropout: the deferred update lost count of "
                       << "the solver's iterations";
  if (static_cast<int>(rates_.size()) == kRateLog) {
    Sync();
    rates_.clear();
    log_begin_ = now_;
  }
  rates_.push_back(rate);
  for (size_t i = 0; i < lazy_.size(); ++i) lazy_[i]->Step(rate);
  for (const Dense& d : dense_) FusedStep(d.param, d.history,
                                          rate * d.lr_mult,
                                          weight_decay_ * d.decay_mult);
  ++now_;
  return true;
}

template <typename Dtype>
void ApproxDropoutLazyUpdate<Dtype>::FusedStep(Blob<Dtype>* param,
    Blob<Dtype>* history, Dtype local_rate, Dtype local_decay) {
  const bool gpu = Caffe::mode() == Caffe::GPU;
  LazyUpdateKernels<Dtype>::Dense(gpu, nesterov_, param->count(),
      gpu ? param->mutable_gpu_data() : param->mutable_cpu_data(),
      gpu ? history->mutable_gpu_data() : history->mutable_cpu_data(),
      gpu ? param->mutable_gpu_diff() : param->mutable_cpu_diff(),
      momentum_, local_rate, local_decay);
  stepped_ += param->count();
}

template <typename Dtype>
void ApproxDropoutLazyUpdate<Dtype>::Sync() {
  if (!active_) return;
  for (size_t i = 0; i < lazy_.size(); ++i) lazy_[i]->SyncAll();
}

template <typename Dtype>
void ApproxDropoutLazyUpdate<Dtype>::End() {
  if (!active_) return;
  Sync();
  Attach(false);
  active_ = false;
}

// ---- the CPU loops ------------------------------------------------------------

#ifndef CPU_ONLY
template <typename Dtype>
void LazyUpdateRunGpu(bool step, bool nesterov, int num_work, const int* work,
                      const Dtype* products, int cols, Dtype* w, Dtype* h,
                      Dtype* g, Dtype momentum, Dtype local_rate,
                      Dtype local_decay);
template <typename Dtype>
void LazyUpdateDenseGpu(bool nesterov, int count, Dtype* w, Dtype* h,
                        Dtype* g, Dtype momentum, Dtype local_rate,
                        Dtype local_decay);
#endif

namespace {

// Stock SGD computes g += decay w (Regularize), h = rate g + momentum h
// (ComputeUpdateValue) and w -= h (Net::Update); Nesterov's step is
// w -= (1 + momentum) h_new - momentum h_old. Here in one pass, g zeroed.
template <typename Dtype>
inline void FusedEntry(bool nesterov, Dtype momentum, Dtype rate, Dtype decay,
                       Dtype* w, Dtype* h, Dtype* g) {
  const Dtype grad = *g + decay * *w;
  const Dtype old = *h;
  const Dtype fresh = rate * grad + momentum * old;
  *h = fresh;
  *w -= nesterov ? (1 + momentum) * fresh - momentum * old : fresh;
  *g = 0;
}

}  // namespace

template <typename Dtype>
void LazyUpdateKernels<Dtype>::Run(bool gpu, bool step, bool nesterov,
    int num_work, const int* work, const Dtype* products, int cols, Dtype* w,
    Dtype* h, Dtype* g, Dtype momentum, Dtype local_rate, Dtype local_decay) {
  if (gpu) {
#ifndef CPU_ONLY
    LazyUpdateRunGpu(step, nesterov, num_work, work, products, cols, w, h, g,
                     momentum, local_rate, local_decay);
#else
    NO_GPU;
#endif
    return;
  }
  for (int i = 0; i < num_work; ++i) {
    const int* item = work + 5 * i;
    const int col0 = item[2], col1 = item[3];
    const Dtype* p = item[4] >= 0 ? products + 4 * item[4] : NULL;
    for (int r = item[0]; r < item[1]; ++r) {
      Dtype* wr = w + static_cast<int64_t>(r) * cols;
      Dtype* hr = h + static_cast<int64_t>(r) * cols;
      if (p) {
        const Dtype hh = p[0], hw = p[1], wh = p[2], ww = p[3];
        for (int c = col0; c < col1; ++c) {
          const Dtype h0 = hr[c], w0 = wr[c];
          hr[c] = hh * h0 + hw * w0;
          wr[c] = wh * h0 + ww * w0;
        }
      }
      if (step) {
        Dtype* gr = g + static_cast<int64_t>(r) * cols;
        if (nesterov) {
          for (int c = col0; c < col1; ++c) {
            FusedEntry(true, momentum, local_rate, local_decay, wr + c,
                       hr + c, gr + c);
          }
        } else {
          for (int c = col0; c < col1; ++c) {
            FusedEntry(false, momentum, local_rate, local_decay, wr + c,
                       hr + c, gr + c);
          }
        }
      }
    }
  }
}

template <typename Dtype>
void LazyUpdateKernels<Dtype>::Dense(bool gpu, bool nesterov, int count,
    Dtype* w, Dtype* h, Dtype* g, Dtype momentum, Dtype local_rate,
    Dtype local_decay) {
  if (gpu) {
#ifndef CPU_ONLY
    LazyUpdateDenseGpu(nesterov, count, w, h, g, momentum, local_rate,
                       local_decay);
#else
    NO_GPU;
#endif
    return;
  }
  if (nesterov) {
    for (int i = 0; i < count; ++i) {
      FusedEntry(true, momentum, local_rate, local_decay, w + i, h + i, g + i);
    }
  } else {
    for (int i = 0; i < count; ++i) {
      FusedEntry(false, momentum, local_rate, local_decay, w + i, h + i,
                 g + i);
    }
  }
}

// ---- SGDSolver's hooks (declared by caffe_patch in sgd_solvers.hpp) ----------

template <typename Dtype>
bool SGDSolver<Dtype>::BeginDeferredUpdate() {
  if (!lazy_update_) {
    lazy_update_.reset(new ApproxDropoutLazyUpdate<Dtype>(
        this->param_, this->type(), this->net_.get(), history_));
  }
  if (lazy_update_->mode() != ApproxDropoutLazyUpdate<Dtype>::STOCK &&
      !this->callbacks().empty()) {
    // Callbacks (multi-GPU all-reduce) read and write every gradient.
    LOG_FIRST_N(INFO, 1) << "approx-dropout: Caffe's own update while the "
                         << "solver has callbacks (multi-GPU)";
    return false;
  }
  return lazy_update_->Begin(this->iter_);
}

template <typename Dtype>
void SGDSolver<Dtype>::SyncDeferredUpdate() {
  if (lazy_update_) lazy_update_->Sync();
}

template <typename Dtype>
void SGDSolver<Dtype>::EndDeferredUpdate() {
  if (lazy_update_) lazy_update_->End();
}

template <typename Dtype>
bool SGDSolver<Dtype>::ApplyDeferredUpdate(Dtype rate) {
  return lazy_update_ && lazy_update_->Apply(rate, this->iter_);
}

template bool SGDSolver<float>::BeginDeferredUpdate();
template bool SGDSolver<double>::BeginDeferredUpdate();
template void SGDSolver<float>::SyncDeferredUpdate();
template void SGDSolver<double>::SyncDeferredUpdate();
template void SGDSolver<float>::EndDeferredUpdate();
template void SGDSolver<double>::EndDeferredUpdate();
template bool SGDSolver<float>::ApplyDeferredUpdate(float rate);
template bool SGDSolver<double>::ApplyDeferredUpdate(double rate);

INSTANTIATE_CLASS(ApproxDropoutLazyParam);
INSTANTIATE_CLASS(ApproxDropoutLazyUpdate);
template struct LazyUpdateKernels<float>;
template struct LazyUpdateKernels<double>;

}  // namespace caffe
