#ifndef CAFFE_UTIL_APPROX_DROPOUT_LAZY_UPDATE_HPP_
#define CAFFE_UTIL_APPROX_DROPOUT_LAZY_UPDATE_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/util/approx_dropout_plan.hpp"
#include "caffe/net.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/util/approx_dropout_pattern.hpp"

namespace caffe {

// The SGD (Nesterov) step of an entry whose gradient is zero is linear in its
// history h and weight w: with momentum mu, local rate r and L2 decay lambda,
//   SGD:      h' = mu h + r lambda w,  w' = w - h'
//   Nesterov: h' = mu h + r lambda w,  w' = w - (1 + mu) h' + mu h
// so k skipped iterations are one product of k 2 x 2 matrices (r may change
// with the lr policy), applied when the entry is next read.
struct LazyStepMatrix {
  double hh, hw, wh, ww;  // h' = hh h + hw w,  w' = wh h + ww w
};

template <typename Dtype> class ApproxDropoutLazyUpdate;

// One parameter blob under the deferred update, seen as rows x cols (an
// InnerProduct weight N x K, a bias N x 1) and cut into cells of
// cell_rows x cell_cols. Each cell records the iteration up to which its
// entries are current (one integer per cell: the only deferred state) and
// whether its diff was written this iteration. Cells are brought up to date,
// and updated, whole: an entry of a cell that its layer did not write has a
// zero gradient, and its step is the deferred one, so whole cells are exact.
template <typename Dtype>
class ApproxDropoutLazyParam {
 public:
  ApproxDropoutLazyParam(ApproxDropoutLazyUpdate<Dtype>* update,
                         Blob<Dtype>* param, Blob<Dtype>* history,
                         const std::string& name, int cell_rows,
                         int cell_cols, Dtype lr_mult, Dtype decay_mult);

  // Before a layer reads param[rows, cols]: queues those cells' catch-up;
  // FinishCatchUp runs the queue (one pass, one kernel on the GPU).
  void CatchUp(const BlockStride& rows, const BlockStride& cols);
  void FinishCatchUp();
  // After a layer's backward wrote the diff in [rows, cols]: those cells are
  // updated by this iteration's step; every other cell's diff stays zero.
  void MarkWritten(const BlockStride& rows, const BlockStride& cols);

  const std::string& name() const { return name_; }
  int cell_rows() const { return cell_rows_; }
  int cell_cols() const { return cell_cols_; }
  int num_cells() const { return row_cells_ * col_cells_; }

 private:
  friend class ApproxDropoutLazyUpdate<Dtype>;
  // A rectangle of whole cells [row0, row1) x [col0, col1) (in entries) and
  // the product to apply first (-1: none, the cells are current).
  struct Work {
    int row0, row1, col0, col1, product;
  };

  void Begin(int iter);           // every cell current at iter, diff zero
  void Step(Dtype rate);          // this iteration's step of written cells
  void SyncAll();                 // every cell current
  // The cells of `set` in a dimension of `cell` sized cells (sorted).
  static void CellsOf(const BlockStride& set, int cell, int num_cells,
                      std::vector<int>* out);
  // Index into products_ of A_{now-1} ... A_{stamp} (now > stamp).
  int ProductFor(int stamp);
  // Fills row_list_ and col_list_ with the cells of [rows, cols]; false
  // when no Step is running (nothing to do).
  bool ListCells(const BlockStride& rows, const BlockStride& cols);
  // Queues the stale cells of row of cells r among `cols` (sorted).
  void QueueCatchUp(int r, const std::vector<int>& cols);
  // Runs the queue: products, then (step) the fused step with local_rate.
  void Flush(bool step, Dtype local_rate);

  ApproxDropoutLazyUpdate<Dtype>* update_;
  Blob<Dtype>* param_;
  Blob<Dtype>* history_;
  std::string name_;
  int rows_, cols_, cell_rows_, cell_cols_, row_cells_, col_cells_;
  Dtype lr_mult_, decay_mult_;
  std::vector<int> stamps_;
  std::vector<char> written_;
  // Scratch, sized once: cells of a call, queued work, products.
  std::vector<int> row_list_, col_list_, all_cols_;
  std::vector<Work> work_;
  std::vector<LazyStepMatrix> products_;  // products_[k - 1]: k iterations
  int products_now_;                      // the `now` products_ are for
  std::vector<Dtype> product_values_;     // products_ rounded to Dtype, 4 each
  Blob<int> work_device_;        // GPU copies of the queue and products
  Blob<Dtype> product_device_;
};

// Decides, at the first Step, how an SGD-family solver updates its net, and
// runs the deferred update (AUTO, for nets with ApproxDropoutInnerProduct
// layers): parameters that only those layers use are updated cell by cell
// (ApproxDropoutLazyParam), every other parameter by one fused pass. Solvers
// and options where deferring is not exact keep Caffe's own update, said
// once in the log.
template <typename Dtype>
class ApproxDropoutLazyUpdate {
 public:
  enum Mode { STOCK, FUSED, LAZY };

  ApproxDropoutLazyUpdate(const SolverParameter& param,
                          const std::string& solver_type, Net<Dtype>* net,
                          const std::vector<shared_ptr<Blob<Dtype> > >& history);
  ~ApproxDropoutLazyUpdate();

  Mode mode() const { return mode_; }
  // Why Caffe's own update is used (mode STOCK), else empty.
  const std::string& reason() const { return reason_; }
  const std::vector<shared_ptr<ApproxDropoutLazyParam<Dtype> > >& lazy_params()
      const { return lazy_; }

  // Step() starts: every parameter current at iteration `iter`, diffs zero,
  // layers attached. False in mode STOCK (nothing to do).
  bool Begin(int iter);
  // This iteration's update (rate: the solver's learning rate); false when
  // not inside a Step (the caller then runs Caffe's own update).
  bool Apply(Dtype rate, int iter);
  // Every deferred cell brought up to date (TEST pass, snapshot).
  void Sync();
  // Step() returns: Sync, then the layers are detached.
  void End();

  bool active() const { return active_; }
  int now() const { return now_; }
  // Entries stepped and brought up to date since construction (benchmarks,
  // tests: the work the deferral saved is what these leave out).
  double stepped_entries() const { return stepped_; }
  double caught_up_entries() const { return caught_up_; }

 private:
  friend class ApproxDropoutLazyParam<Dtype>;
  // A_t for a parameter's local rate and decay.
  LazyStepMatrix StepMatrix(int iter, Dtype lr_mult, Dtype decay_mult) const;
  void Attach(bool on);
  void FusedStep(Blob<Dtype>* param, Blob<Dtype>* history, Dtype local_rate,
                 Dtype local_decay);

  Mode mode_;
  std::string reason_;
  bool nesterov_, active_;
  Dtype momentum_, weight_decay_;
  int now_, log_begin_;
  std::vector<Dtype> rates_;  // rates_[i - log_begin_]: iteration i's rate
  std::vector<shared_ptr<ApproxDropoutLazyParam<Dtype> > > lazy_;
  // Parameters taking the fused pass: (param, history, lr_mult, decay_mult).
  struct Dense {
    Blob<Dtype>* param;
    Blob<Dtype>* history;
    Dtype lr_mult, decay_mult;
  };
  std::vector<Dense> dense_;
  // Layers using the lazy parameters: (layer, blob index, lazy param).
  struct Use {
    Layer<Dtype>* layer;
    int blob;
    ApproxDropoutLazyParam<Dtype>* lazy;
  };
  std::vector<Use> uses_;
  double stepped_, caught_up_;
};

// A layer's use of the deferred update, in its plan's terms: the cells of
// the weights (w) and bias (b) that the plan's groups read (written false:
// caught up, before a forward reads them) or wrote (written true: marked,
// after backward wrote their diff). drops_outputs: ROW on the output side
// (the bias follows the kept outputs; else all N of it is read). Either
// parameter may be NULL.
template <typename Dtype>
void ApproxDropoutLazyVisit(const ApproxDropoutPlan& plan, bool drops_outputs,
    int num_output, bool written, ApproxDropoutLazyParam<Dtype>* w,
    ApproxDropoutLazyParam<Dtype>* b);

// Cell sizes (rows x columns of the weights, or of the N x 1 bias) fine
// enough that whole cells cover a layer's kept parts with little excess: a
// dimension that BLOCK patterns cut in ~128 cells (a kept block then takes
// at most two partial cells), tiles for TILE, single units for STRIDED, and
// the whole dimension where every unit is always read. drops: the layer's
// rate is positive; input_fine: it skips a producer's BLOCK (or not yet
// known) inputs, input_single: a producer's STRIDED inputs.
void ApproxDropoutLazyCellSize(const ApproxDropoutShape& shape, bool drops,
    bool input_fine, bool input_single, bool bias, int* cell_rows,
    int* cell_cols);

// The device side of the update: CPU loops and their CUDA twins.
template <typename Dtype>
struct LazyUpdateKernels {
  // For each work item: apply products[item.product] (if >= 0) to (h, w),
  // then (step) the fused step with diff g, zeroing g.
  static void Run(bool gpu, bool step, bool nesterov, int num_work,
                  const int* work, const Dtype* products, int cols, Dtype* w,
                  Dtype* h, Dtype* g, Dtype momentum, Dtype local_rate,
                  Dtype local_decay);
  // The fused step over every entry.
  static void Dense(bool gpu, bool nesterov, int count, Dtype* w, Dtype* h,
                    Dtype* g, Dtype momentum, Dtype local_rate,
                    Dtype local_decay);
};

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_LAZY_UPDATE_HPP_
