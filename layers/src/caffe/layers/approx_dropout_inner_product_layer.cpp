#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "boost/thread/mutex.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/approx_dropout_inner_product_layer.hpp"
#include "caffe/util/approx_dropout_lazy_update.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

// A compact buffer's memory on the device in use, taken only when an
// iteration's plan first uses that buffer.
template <typename Dtype>
Dtype* Buffer(Blob<Dtype>* blob, bool gpu) {
  return gpu ? blob->mutable_gpu_data() : blob->mutable_cpu_data();
}

// Pattern tops by their data (shared with any Split of the blob), with the
// layer writing each and its name: a consumer tells a pattern top from any
// other blob and names its producer in errors.
struct PatternTopOwner {
  const void* layer;  // ownership by identity: names repeat across nets
  std::string name;
};
boost::mutex pattern_tops_mutex;
std::map<const void*, PatternTopOwner>& PatternTops() {
  static std::map<const void*, PatternTopOwner> tops;
  return tops;
}

// Drops data's entry if `layer` registered it (the memory may serve another
// layer's pattern top by now, maybe a same-named layer of a newer net while
// this one lives on in a pycaffe reference). The caller holds the mutex.
void ForgetPatternTop(const void* data, const void* layer) {
  std::map<const void*, PatternTopOwner>::iterator it =
      PatternTops().find(data);
  if (it != PatternTops().end() && it->second.layer == layer) {
    PatternTops().erase(it);
  }
}

}  // namespace

int DefaultBatchSlices(const ApproxDropoutParameter& param) {
  // Measured (scripts/results): TILE, whose slices each gather their own
  // tiles of W, is fastest with one. ROW dropping outputs: up to p = 0.5 one
  // pattern per batch is as accurate as two slices (Fig. 4, 10 epochs, 3
  // seeds: +0.21 pp at 0.5, -0.08 pp at 0.3) and faster (CaffeNet's fc6 at
  // p = 0.5, dp = 2 only: two slices read all of W; 1.0-1.5x the time of one,
  // fc6_slices); above, two slices keep the accuracy (-1.29 pp with one at
  // 0.7) for ~10 % of the speed. Other ROW layers (side INPUT, ApproxDropout-
  // LSTM's input): two, as measured there.
  if (param.pattern() == ApproxDropoutParameter_Pattern_TILE) return 1;
  if (param.side() == ApproxDropoutParameter_Side_OUTPUT &&
      param.dropout_ratio() <= 0.5f) {
    return 1;
  }
  return 2;
}

template <typename Dtype>
ApproxDropoutInnerProductLayer<Dtype>::~ApproxDropoutInnerProductLayer() {
  if (pattern_top_ == NULL) return;
  boost::mutex::scoped_lock lock(pattern_tops_mutex);
  ForgetPatternTop(pattern_top_, this);
}

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
  const bool tile = param_.pattern() == ApproxDropoutParameter_Pattern_TILE;
  drops_outputs_ = !tile &&
                   param_.side() == ApproxDropoutParameter_Side_OUTPUT;
  shape_.N = N_;
  shape_.K = K_;
  shape_.tile = tile;
  shape_.input_side = param_.side() == ApproxDropoutParameter_Side_INPUT;
  // Unset: BLOCK, whose kept parts are all views (scripts/results: as
  // accurate as STRIDED, and no gathers).
  shape_.block_layout = !param_.has_layout() ||
                        param_.layout() == ApproxDropoutParameter_Layout_BLOCK;
  shape_.diagonal =
      param_.tile_order() == ApproxDropoutParameter_TileOrder_DIAGONAL;
  shape_.tile_height = param_.tile_height();
  shape_.tile_width = param_.tile_width();
  const string where = "Layer " + name + ": approx_dropout_param.";
  CHECK(!param_.has_recurrent_dropout_ratio() &&
        param_.recurrent_pattern_distribution_size() == 0 &&
        !param_.has_recurrent_pattern()) << where << "recurrent_dropout_ratio, "
      << "recurrent_pattern_distribution and recurrent_pattern apply to "
      << "ApproxDropoutLSTM only";
  if (param_.has_batch_slices()) {
    CHECK_GE(param_.batch_slices(), 1) << where << "batch_slices must be >= 1 "
        << "(1 is one pattern for the whole batch), got "
        << param_.batch_slices();
    CHECK_LE(param_.batch_slices(), 1u << 20) << where << "batch_slices ("
        << param_.batch_slices() << ") is absurdly large";
    batch_slices_ = static_cast<int>(param_.batch_slices());
  } else {
    batch_slices_ = DefaultBatchSlices(param_);
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
    CHECK(!param_.has_layout()) << where << "layout applies to pattern: ROW "
        << "only (TILE keeps tiles, numbered by tile_order)";
  } else {
    CHECK(!param_.has_tile_order()) << where << "tile_order applies to "
        << "pattern: TILE only";
  }
  sampler_.reset(new DropoutPatternSampler(param_, units(), name));
  propagated_ = input_block_ = false;
  if (bottom.size() > 1) SetUpPatternBottom(*bottom[1], true);

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
    for (size_t i = 0; i < this->blobs_.size(); ++i) {
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
    pattern_shape[1] = kPatternColumns;
    top[1]->Reshape(pattern_shape);
    // Registered by its data, which a reallocating Reshape replaces; new data
    // is written at once (forward writes it after that), so that consumers
    // set up next can check the wiring.
    const void* data = top[1]->data().get();
    if (data != pattern_top_) {
      WritePatternTop(top[1]);
      boost::mutex::scoped_lock lock(pattern_tops_mutex);
      ForgetPatternTop(pattern_top_, this);
      pattern_top_ = data;
      const PatternTopOwner owner = {this, this->layer_param_.name()};
      PatternTops()[pattern_top_] = owner;
    }
  }
  // Compact operands at their largest (dp = 1): the slices' compact x (y)
  // lie in their own rows' share, and the patterns of one iteration keep
  // disjoint parts of W. Memory is taken only when a pattern first needs a
  // buffer, never per iteration.
  x_buf_.Reshape(vector<int>(1, M_ * K_));
  ReshapeSharedBuffers();
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::ReshapeSharedBuffers() {
  // Sharers have one W shape; y grows to the largest sharer's batch.
  CHECK(bufs_->w.count() == 0 || bufs_->w.count() == N_ * K_) << "Layer "
      << this->layer_param_.name() << ": shares compact buffers with a layer "
      << "whose weights have another shape";
  if (bufs_->y.count() < M_ * N_) bufs_->y.Reshape(vector<int>(1, M_ * N_));
  bufs_->w.Reshape(vector<int>(1, N_ * K_));
  bufs_->dw.Reshape(vector<int>(1, N_ * K_));
  bufs_->w_holds.clear();
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::ShareCompactBuffers(
    const shared_ptr<ApproxDropoutSharedBuffers<Dtype> >& buffers) {
  CHECK(buffers) << "Layer " << this->layer_param_.name()
                 << ": ShareCompactBuffers needs buffers";
  bufs_ = buffers;
  ReshapeSharedBuffers();
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::GatherWeights(
    const ApproxDropoutOps<Dtype>& ops, bool gpu, bool always) {
  vector<DropoutPattern>& holds = bufs_->w_holds;
  bool held = !always && holds.size() == 2u * plan_.num_classes();
  for (int c = 0; held && c < plan_.num_classes(); ++c) {
    held = holds[2 * c].dp == plan_.cls(c).pattern.dp &&
           holds[2 * c].b == plan_.cls(c).pattern.b &&
           holds[2 * c + 1].dp == plan_.cls(c).input.dp &&
           holds[2 * c + 1].b == plan_.cls(c).input.b;
  }
  if (held) return;
  holds.clear();
  const Dtype* w = gpu ? this->blobs_[0]->gpu_data()
                       : this->blobs_[0]->cpu_data();
  for (int c = 0; c < plan_.num_classes(); ++c) {
    const ApproxDropoutClass& cls = plan_.cls(c);
    for (const ApproxDropoutGroup& g : cls.groups) {
      if (g.w_view) continue;
      Dtype* buf = Buffer(&bufs_->w, gpu) + cls.w_base + g.w_offset;
      ops.gather(g.out.size(), g.out, g.in, w, K_, buf);
    }
    holds.push_back(cls.pattern);
    holds.push_back(cls.input);
  }
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
void ApproxDropoutInnerProductLayer<Dtype>::SetUpPatternBottom(
    const Blob<Dtype>& pattern, bool at_setup) {
  const string& name = this->layer_param_.name();
  const string blob = this->layer_param_.bottom_size() > 1
      ? this->layer_param_.bottom(1) : "(unnamed)";
  CHECK(pattern.num_axes() == 2 && pattern.shape(1) == kPatternColumns)
      << "Layer " << name << ": second bottom '" << blob << "' is not a "
      << "pattern top (the second top of an ApproxDropoutInnerProduct layer)";
  string producer;
  {
    boost::mutex::scoped_lock lock(pattern_tops_mutex);
    std::map<const void*, PatternTopOwner>::const_iterator it =
        PatternTops().find(pattern.data().get());
    if (it != PatternTops().end()) producer = it->second.name;
  }
  const string pair = "Layer " + name + " (pattern bottom '" + blob +
      "' from layer " + (producer.empty() ? "?" : producer) + "): ";
  CHECK(!shape_.tile && !shape_.input_side) << pair << "a pattern bottom "
      << "needs approx_dropout_param.pattern: ROW with side: OUTPUT in "
      << name << " (it skips the inputs that its producer dropped)";
  propagated_ = true;
  // A pattern top read by several layers reaches them through a Split,
  // which shares the producer's data only from its first forward on: the
  // producer's checks wait until then.
  pattern_checked_ = !producer.empty();
  if (!pattern_checked_ && at_setup) return;
  CHECK(!producer.empty()) << "Layer " << name << ": second bottom '" << blob
      << "' is not a pattern top (the second top of an "
      << "ApproxDropoutInnerProduct layer)";
  const Dtype* row = pattern.cpu_data();
  const int code = static_cast<int>(row[2]);
  CHECK(code == ApproxDropoutParameter_Layout_STRIDED ||
        code == ApproxDropoutParameter_Layout_BLOCK) << pair << producer
      << " does not drop its outputs (ROW side INPUT, TILE and "
      << "dropout_ratio 0 leave no output unit to skip)";
  CHECK_EQ(static_cast<int>(row[3]), K_) << pair << producer << " has "
      << static_cast<int>(row[3]) << " output units, but the input size K of "
      << name << " is " << K_;
  input_block_ = code == ApproxDropoutParameter_Layout_BLOCK;
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::WritePatternTop(
    Blob<Dtype>* top) const {
  int code = kNotDropped;
  if (drops_outputs_ && sampler_->dropout_ratio() > 0) {
    code = shape_.block_layout ? ApproxDropoutParameter_Layout_BLOCK
                               : ApproxDropoutParameter_Layout_STRIDED;
  }
  Dtype* row = top->mutable_cpu_data();
  for (int s = 0; s < batch_slices_; ++s, row += kPatternColumns) {
    const int last = static_cast<int>(slice_patterns_.size()) - 1;
    const DropoutPattern p =
        last < 0 ? DropoutPattern{1, 0} : slice_patterns_[std::min(s, last)];
    row[0] = p.dp;
    row[1] = p.b;
    row[2] = code;
    row[3] = N_;
  }
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::ForwardWith(
    const ApproxDropoutOps<Dtype>& ops, bool gpu,
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  if (this->phase_ == TRAIN) {
    if (fixed_) {
      DropoutPatternSampler::SliceOffsets(fixed_pattern_, batch_slices_,
                                          &slice_patterns_);
    } else if (sampler_->distribution().size() == 1) {
      // dp = 1 is certain (a layer that only skips, dropout_ratio 0): draw
      // nothing, so that wiring such a layer leaves Caffe's random stream,
      // hence every later iteration, as it was.
      const DropoutPattern all = {1, 0};
      DropoutPatternSampler::SliceOffsets(all, batch_slices_, &slice_patterns_);
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
  if (propagated_) {
    if (!pattern_checked_) SetUpPatternBottom(*bottom[1], false);
    // One row per producer slice (dp = 1 in its TEST phase). The producer
    // may cut the batch into another number of slices than this layer (or
    // run in another phase): the plan works on the segments where both
    // patterns are constant, so wiring never changes what is computed.
    const Dtype* row = bottom[1]->cpu_data();
    input_patterns_.resize(bottom[1]->shape(0));
    for (size_t s = 0; s < input_patterns_.size(); ++s, row += kPatternColumns) {
      input_patterns_[s].dp = static_cast<int>(row[0]);
      input_patterns_[s].b = static_cast<int>(row[1]);
    }
    ApproxDropoutSegments(M_, slice_patterns_, input_patterns_, &seg_bounds_,
                          &seg_patterns_, &seg_inputs_);
    plan_.Plan(shape_, seg_bounds_, seg_patterns_, &seg_inputs_, input_block_);
  } else {
    plan_.Plan(shape_, M_, slice_patterns_, NULL, false);
  }
  if (top.size() > 1) WritePatternTop(top[1]);
  VisitLazyParams(false, true, bias_term_);
  const Dtype* x = gpu ? bottom[0]->gpu_data() : bottom[0]->cpu_data();
  const Dtype* w = gpu ? this->blobs_[0]->gpu_data()
                       : this->blobs_[0]->cpu_data();
  Dtype* y = gpu ? top[0]->mutable_gpu_data() : top[0]->mutable_cpu_data();
  const Dtype* bias = !bias_term_ ? NULL : gpu ? this->blobs_[1]->gpu_data()
                                               : this->blobs_[1]->cpu_data();
  if (!plan_.out_covered()) ops.set_zero(M_ * N_, y);
  GatherWeights(ops, gpu, true);
  for (int c = 0; c < plan_.num_classes(); ++c) {
    const ApproxDropoutClass& cls = plan_.cls(c);
    for (int s : cls.slices) {
      const int m0 = plan_.SliceBegin(s);
      const int rows = plan_.SliceBegin(s + 1) - m0;
      const BlockStride row_map = BlockStride::All(rows);
      const Dtype* xs = x + m0 * K_;
      Dtype* ys = y + m0 * N_;
      for (const ApproxDropoutGroup& g : cls.groups) {
        const int nout = g.out.size(), nin = g.in.size();
        const Dtype* xg = xs + g.in[0];
        int ldx = K_;
        if (!g.in.contiguous()) {
          Dtype* buf = Buffer(&x_buf_, gpu) + m0 * K_ + rows * g.x_cols_before;
          ops.gather(rows, row_map, g.in, xs, K_, buf);
          xg = buf;
          ldx = nin;
        }
        const Dtype* wg = g.w_view ? w + g.w_view_offset
            : (gpu ? bufs_->w.gpu_data() : bufs_->w.cpu_data())
              + cls.w_base + g.w_offset;
        if (g.out.contiguous()) {
          ops.gemm(false, true, rows, nout, nin, scale_, xg, ldx, wg, g.ldw,
                   Dtype(0), ys + g.out[0], N_);
        } else {
          Dtype* yg = Buffer(&bufs_->y, gpu) + m0 * N_ + rows * g.y_cols_before;
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
    if (!plan_.in_covered()) ops.set_zero(M_ * K_, dx);
    // A shared buffer may hold another step's W parts by now.
    GatherWeights(ops, gpu, false);
  }
  for (int c = 0; c < plan_.num_classes(); ++c) {
    const ApproxDropoutClass& cls = plan_.cls(c);
    bool first_slice = true;
    for (int s : cls.slices) {
      const int m0 = plan_.SliceBegin(s);
      const int rows = plan_.SliceBegin(s + 1) - m0;
      const BlockStride row_map = BlockStride::All(rows);
      const Dtype* dys = dy + m0 * N_;
      const Dtype* xs = x + m0 * K_;
      for (const ApproxDropoutGroup& g : cls.groups) {
        const int nout = g.out.size(), nin = g.in.size();
        const Dtype* dyg = dys + g.out[0];
        int lddy = N_;
        if (!g.out.contiguous()) {
          Dtype* buf = Buffer(&bufs_->y, gpu) + m0 * N_ + rows * g.y_cols_before;
          ops.gather(rows, row_map, g.out, dys, N_, buf);
          dyg = buf;
          lddy = nout;
        }
        // The compact x of this slice and group, as gathered by the forward.
        Dtype* x_compact = g.in.contiguous() ? NULL
            : Buffer(&x_buf_, gpu) + m0 * K_ + rows * g.x_cols_before;
        const Dtype* xg = x_compact ? x_compact : xs + g.in[0];
        const int ldx = x_compact ? nin : K_;
        if (weight_grad) {
          if (g.w_view) {
            ops.gemm(true, false, nout, nin, rows, scale_, dyg, lddy, xg, ldx,
                     Dtype(1), dw + g.w_view_offset, g.ldw);
          } else {
            ops.gemm(true, false, nout, nin, rows, scale_, dyg, lddy, xg, ldx,
                     first_slice ? Dtype(0) : Dtype(1),
                     Buffer(&bufs_->dw, gpu) + cls.w_base + g.w_offset, nin);
          }
        }
        if (db && drops_outputs_) {
          ops.add_column_sums(rows, nout, scale_, dyg, lddy, db + g.out[0],
                              g.out.contiguous() ? 1 : g.out.step);
        }
        if (dx) {
          // W[out, in], in place or as gathered by the forward pass.
          const Dtype* wg = g.w_view ? w + g.w_view_offset
              : (gpu ? bufs_->w.gpu_data() : bufs_->w.cpu_data())
                + cls.w_base + g.w_offset;
          if (!x_compact) {
            ops.gemm(false, false, rows, nin, nout, scale_, dyg, lddy, wg,
                     g.ldw, Dtype(0), dx + m0 * K_ + g.in[0], K_);
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
      for (const ApproxDropoutGroup& g : cls.groups) {
        if (g.w_view) continue;
        const Dtype* dwg = Buffer(&bufs_->dw, gpu) + cls.w_base + g.w_offset;
        ops.scatter(g.out.size(), g.out, g.in, dwg, dw, K_, true);
      }
    }
  }
  if (db && !drops_outputs_) {
    ops.add_column_sums(M_, N_, Dtype(1), dy, N_, db, 1);
  }
  VisitLazyParams(true, weight_grad, bias_grad);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::set_lazy_param(
    int blob_index, ApproxDropoutLazyParam<Dtype>* lazy) {
  CHECK(blob_index >= 0 && blob_index < static_cast<int>(this->blobs_.size()))
      << "Layer " << this->layer_param_.name() << ": no parameter blob "
      << blob_index;
  lazy_.resize(this->blobs_.size(), NULL);
  lazy_[blob_index] = lazy;
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::LazyCells(
    int blob_index, int* cell_rows, int* cell_cols) const {
  // A dimension that BLOCK patterns cut in ~128 cells (a kept block then
  // takes at most two partial cells), tiles for TILE, single units for
  // STRIDED, and the whole dimension where every unit is always read.
  const int fine_n = std::max(1, (N_ + 127) / 128);
  const int fine_k = std::max(1, (K_ + 127) / 128);
  const bool drops = sampler_->dropout_ratio() > 0;
  int rows = N_, cols = K_;
  if (shape_.tile) {
    rows = shape_.tile_height;
    cols = shape_.tile_width;
  } else if (shape_.input_side) {
    if (drops) cols = shape_.block_layout ? fine_k : 1;
  } else {
    if (drops) rows = shape_.block_layout ? fine_n : 1;
    // The producer's layout is known once its pattern top was checked.
    if (propagated_) cols = input_block_ || !pattern_checked_ ? fine_k : 1;
  }
  *cell_rows = rows;
  *cell_cols = blob_index == 0 ? cols : 1;
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::VisitLazyParams(bool written,
    bool weights, bool bias) {
  ApproxDropoutLazyParam<Dtype>* w =
      weights && lazy_.size() > 0 ? lazy_[0] : NULL;
  ApproxDropoutLazyParam<Dtype>* b = bias && lazy_.size() > 1 ? lazy_[1] : NULL;
  if (!w && !b) return;
  const BlockStride one = BlockStride::All(1);
  for (int c = 0; c < plan_.num_classes(); ++c) {
    for (const ApproxDropoutGroup& g : plan_.cls(c).groups) {
      if (w) written ? w->MarkWritten(g.out, g.in) : w->CatchUp(g.out, g.in);
      if (b && drops_outputs_) {
        written ? b->MarkWritten(g.out, one) : b->CatchUp(g.out, one);
      }
    }
  }
  if (b && !drops_outputs_) {
    const BlockStride all = BlockStride::All(N_);
    written ? b->MarkWritten(all, one) : b->CatchUp(all, one);
  }
  if (!written) {
    if (w) w->FinishCatchUp();
    if (b) b->FinishCatchUp();
  }
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  ForwardWith(ApproxDropoutCpuOps<Dtype>(), false, bottom, top);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  BackwardWith(ApproxDropoutCpuOps<Dtype>(), false, top, propagate_down,
               bottom);
}

#ifdef CPU_ONLY
STUB_GPU(ApproxDropoutInnerProductLayer);
#endif

INSTANTIATE_CLASS(ApproxDropoutInnerProductLayer);
REGISTER_LAYER_CLASS(ApproxDropoutInnerProduct);

}  // namespace caffe
