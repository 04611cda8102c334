#include <string>
#include <vector>

#include "caffe/layers/approx_dropout_inner_product_layer.hpp"
#include "caffe/util/approx_dropout_lazy_update.hpp"
#include "caffe/util/approx_dropout_param.hpp"
#include "caffe/util/approx_dropout_pattern_top.hpp"
#include "caffe/util/inner_product_setup.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
ApproxDropoutInnerProductLayer<Dtype>::~ApproxDropoutInnerProductLayer() {
  if (pattern_top_ != NULL) ApproxDropoutPatternTop::Forget(pattern_top_, this);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const InnerProductParameter& ip = this->layer_param_.inner_product_param();
  const string& name = this->layer_param_.name();
  K_ = bottom[0]->count(bottom[0]->CanonicalAxisIndex(ip.axis()));
  CheckApproxDropoutParam(this->layer_param_, K_);
  N_ = ip.num_output();
  bias_term_ = ip.bias_term();
  param_ = this->layer_param_.approx_dropout_param();
  shape_ = ApproxDropoutShapeOf(param_, N_, K_);
  drops_outputs_ = !shape_.tile && !shape_.input_side;
  batch_slices_ = param_.has_batch_slices()
      ? static_cast<int>(param_.batch_slices()) : DefaultBatchSlices(param_);
  sampler_.reset(new DropoutPatternSampler(param_, units(), name));
  propagated_ = input_block_ = false;
  if (bottom.size() > 1) SetUpPatternBottom(*bottom[1], true);

  SetUpInnerProductBlobs(this->layer_param_, K_, &this->blobs_);
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
  M_ = ReshapeInnerProductTop(this->layer_param_, K_, *bottom[0], top[0]);
  if (top.size() > 1) {
    vector<int> pattern_shape(2);
    pattern_shape[0] = batch_slices_;
    pattern_shape[1] = ApproxDropoutPatternTop::kColumns;
    top[1]->Reshape(pattern_shape);
    // Registered by its data, which a reallocating Reshape replaces; new data
    // is written at once (forward writes it after that), so that consumers
    // set up next can check the wiring.
    const void* data = top[1]->data().get();
    if (data != pattern_top_) {
      WritePatternTop(top[1]);
      if (pattern_top_ != NULL) {
        ApproxDropoutPatternTop::Forget(pattern_top_, this);
      }
      pattern_top_ = data;
      ApproxDropoutPatternTop::Register(data, this, this->layer_param_.name());
    }
  }
  // Compact operands at their largest (dp = 1): the slices' compact x (y)
  // lie in their own rows' share, and the patterns of one iteration keep
  // disjoint parts of W. Memory is taken only when a pattern first needs a
  // buffer, never per iteration.
  x_buf_.Reshape(vector<int>(1, M_ * K_));
  bufs_->Reshape(M_ * N_, shape_, this->layer_param_.name());
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::ShareCompactBuffers(
    const shared_ptr<ApproxDropoutSharedBuffers<Dtype> >& buffers) {
  const string& name = this->layer_param_.name();
  CHECK(buffers) << "Layer " << name << ": ShareCompactBuffers needs buffers";
  CHECK(sampler_) << "Layer " << name << ": ShareCompactBuffers after SetUp";
  // A producer's pattern decides the groups too, and sharers would not know
  // each other's.
  CHECK(!propagated_) << "Layer " << name << ": a layer with a pattern "
      << "bottom keeps compact buffers of its own";
  bufs_ = buffers;
  bufs_->Reshape(M_ * N_, shape_, name);
}

template <typename Dtype>
typename ApproxDropoutInnerProductLayer<Dtype>::GroupOperands
ApproxDropoutInnerProductLayer<Dtype>::Operands(
    const ApproxDropoutOps<Dtype>& ops, const ApproxDropoutClass& cls,
    const ApproxDropoutGroup& g, int slice) {
  GroupOperands o;
  o.m0 = plan_.SliceBegin(slice);
  o.rows = plan_.SliceBegin(slice + 1) - o.m0;
  // A slice's compact x and y lie in its own rows' share of the buffers.
  o.x_compact = g.in.contiguous() ? NULL
      : ops.mutable_data(&x_buf_) + o.m0 * K_ + o.rows * g.x_cols_before;
  o.y_compact = g.out.contiguous() ? NULL
      : ops.mutable_data(&bufs_->y) + o.m0 * N_ + o.rows * g.y_cols_before;
  o.w = g.w_view ? ops.data(*this->blobs_[0]) + g.w_view_offset
                 : ops.data(bufs_->w) + cls.w_base + g.w_offset;
  return o;
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
  const string blob = this->layer_param_.bottom_size() > 1
      ? this->layer_param_.bottom(1) : "(unnamed)";
  propagated_ = true;
  pattern_checked_ = ApproxDropoutPatternTop::CheckBottom(pattern,
      this->layer_param_.name(), blob, drops_outputs_, K_, at_setup,
      &input_block_);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::WritePatternTop(
    Blob<Dtype>* top) const {
  int code = ApproxDropoutPatternTop::kNotDropped;
  if (drops_outputs_ && sampler_->dropout_ratio() > 0) {
    code = shape_.block_layout ? ApproxDropoutParameter_Layout_BLOCK
                               : ApproxDropoutParameter_Layout_STRIDED;
  }
  ApproxDropoutPatternTop::Write(slice_patterns_, code, N_, top);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::SamplePatterns() {
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
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::PlanIteration(
    const vector<Blob<Dtype>*>& bottom) {
  if (!propagated_) {
    plan_.Plan(shape_, M_, slice_patterns_, NULL, false);
    return;
  }
  if (!pattern_checked_) SetUpPatternBottom(*bottom[1], false);
  // One row per producer slice (dp = 1 in its TEST phase). The producer may
  // cut the batch into another number of slices than this layer (or run in
  // another phase): the plan works on the segments where both patterns are
  // constant, so wiring never changes what is computed.
  ApproxDropoutPatternTop::Read(*bottom[1], &input_patterns_);
  ApproxDropoutSegments(M_, slice_patterns_, input_patterns_, &seg_bounds_,
                        &seg_patterns_, &seg_inputs_);
  plan_.Plan(shape_, seg_bounds_, seg_patterns_, &seg_inputs_, input_block_);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::ForwardWith(
    const ApproxDropoutOps<Dtype>& ops, const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  SamplePatterns();
  PlanIteration(bottom);
  if (top.size() > 1) WritePatternTop(top[1]);
  VisitLazyParams(false, true, bias_term_);
  const Dtype* x = ops.data(*bottom[0]);
  Dtype* y = ops.mutable_data(top[0]);
  const Dtype* bias = bias_term_ ? ops.data(*this->blobs_[1]) : NULL;
  if (!plan_.out_covered()) ops.set_zero(M_ * N_, y);
  bufs_->GatherWeights(ops, plan_, *this->blobs_[0], K_, true);
  for (int c = 0; c < plan_.num_classes(); ++c) {
    const ApproxDropoutClass& cls = plan_.cls(c);
    for (int s : cls.slices) {
      for (const ApproxDropoutGroup& g : cls.groups) {
        const GroupOperands o = Operands(ops, cls, g, s);
        const BlockStride row_map = BlockStride::All(o.rows);
        const int nout = g.out.size(), nin = g.in.size();
        const Dtype* xs = x + o.m0 * K_;
        Dtype* ys = y + o.m0 * N_;
        if (o.x_compact) ops.gather(o.rows, row_map, g.in, xs, K_, o.x_compact);
        const Dtype* xg = o.x_compact ? o.x_compact : xs + g.in[0];
        const int ldx = o.x_compact ? nin : K_;
        Dtype* yg = o.y_compact ? o.y_compact : ys + g.out[0];
        ops.gemm(false, true, o.rows, nout, nin, scale_, xg, ldx, o.w, g.ldw,
                 Dtype(0), yg, o.y_compact ? nout : N_);
        if (o.y_compact) {
          ops.scatter(o.rows, row_map, g.out, o.y_compact, ys, N_, false);
        }
      }
      // RDP drops whole output neurons, bias included.
      if (bias && drops_outputs_) {
        const int m0 = plan_.SliceBegin(s);
        ops.add_bias(plan_.SliceBegin(s + 1) - m0, cls.groups[0].out, scale_,
                     bias, y + m0 * N_, N_);
      }
    }
  }
  if (bias && !drops_outputs_) {
    ops.add_bias(M_, BlockStride::All(N_), Dtype(1), bias, y, N_);
  }
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::BackwardWith(
    const ApproxDropoutOps<Dtype>& ops, const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  const Dtype* dy = ops.diff(*top[0]);
  const Dtype* x = ops.data(*bottom[0]);
  const bool weight_grad = this->param_propagate_down_[0];
  const bool bias_grad = bias_term_ && this->param_propagate_down_[1];
  Dtype* dw = weight_grad ? ops.mutable_diff(this->blobs_[0].get()) : NULL;
  Dtype* db = bias_grad ? ops.mutable_diff(this->blobs_[1].get()) : NULL;
  Dtype* dx = NULL;
  if (propagate_down[0]) {
    dx = ops.mutable_diff(bottom[0]);
    if (!plan_.in_covered()) ops.set_zero(M_ * K_, dx);
    // A shared buffer may hold another step's W parts by now.
    bufs_->GatherWeights(ops, plan_, *this->blobs_[0], K_, false);
  }
  for (int c = 0; c < plan_.num_classes(); ++c) {
    const ApproxDropoutClass& cls = plan_.cls(c);
    bool first_slice = true;
    for (int s : cls.slices) {
      for (const ApproxDropoutGroup& g : cls.groups) {
        // The forward's operands: the compact x it gathered, W as it read it.
        const GroupOperands o = Operands(ops, cls, g, s);
        const BlockStride row_map = BlockStride::All(o.rows);
        const int nout = g.out.size(), nin = g.in.size();
        const Dtype* dys = dy + o.m0 * N_;
        if (o.y_compact) ops.gather(o.rows, row_map, g.out, dys, N_, o.y_compact);
        const Dtype* dyg = o.y_compact ? o.y_compact : dys + g.out[0];
        const int lddy = o.y_compact ? nout : N_;
        const Dtype* xg = o.x_compact ? o.x_compact : x + o.m0 * K_ + g.in[0];
        const int ldx = o.x_compact ? nin : K_;
        if (weight_grad) {
          if (g.w_view) {
            ops.gemm(true, false, nout, nin, o.rows, scale_, dyg, lddy, xg, ldx,
                     Dtype(1), dw + g.w_view_offset, g.ldw);
          } else {
            ops.gemm(true, false, nout, nin, o.rows, scale_, dyg, lddy, xg, ldx,
                     first_slice ? Dtype(0) : Dtype(1),
                     ops.mutable_data(&bufs_->dw) + cls.w_base + g.w_offset,
                     nin);
          }
        }
        if (db && drops_outputs_) {
          ops.add_column_sums(o.rows, nout, scale_, dyg, lddy, db + g.out[0],
                              g.out.contiguous() ? 1 : g.out.step);
        }
        if (dx) {
          Dtype* dxs = dx + o.m0 * K_;
          // The compact x has served the weight gradient: dx's compact rows.
          ops.gemm(false, false, o.rows, nin, nout, scale_, dyg, lddy, o.w,
                   g.ldw, Dtype(0), o.x_compact ? o.x_compact : dxs + g.in[0],
                   o.x_compact ? nin : K_);
          if (o.x_compact) {
            ops.scatter(o.rows, row_map, g.in, o.x_compact, dxs, K_, false);
          }
        }
      }
      first_slice = false;
    }
    if (weight_grad) {
      for (const ApproxDropoutGroup& g : cls.groups) {
        if (g.w_view) continue;
        const Dtype* dwg = ops.data(bufs_->dw) + cls.w_base + g.w_offset;
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
  // The producer's layout is known once its pattern top was checked.
  ApproxDropoutLazyCellSize(shape_, sampler_->dropout_ratio() > 0,
      propagated_ && (input_block_ || !pattern_checked_),
      propagated_ && pattern_checked_ && !input_block_, blob_index == 1,
      cell_rows, cell_cols);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::VisitLazyParams(bool written,
    bool weights, bool bias) {
  ApproxDropoutLazyVisit(plan_, drops_outputs_, N_, written,
                         weights && lazy_.size() > 0 ? lazy_[0] : NULL,
                         bias && lazy_.size() > 1 ? lazy_[1] : NULL);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  ForwardWith(ApproxDropoutCpuOps<Dtype>(), bottom, top);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  BackwardWith(ApproxDropoutCpuOps<Dtype>(), top, propagate_down, bottom);
}

#ifdef CPU_ONLY
STUB_GPU(ApproxDropoutInnerProductLayer);
#endif

INSTANTIATE_CLASS(ApproxDropoutInnerProductLayer);
REGISTER_LAYER_CLASS(ApproxDropoutInnerProduct);

}  // namespace caffe
