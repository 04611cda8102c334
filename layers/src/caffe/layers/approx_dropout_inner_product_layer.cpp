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
  // The units a pattern keeps or drops: tiles of W, inputs or outputs.
  const int th = shape_.tile_height, tw = shape_.tile_width;
  const int units = shape_.tile ? ((N_ + th - 1) / th) * ((K_ + tw - 1) / tw)
                                : shape_.input_side ? K_ : N_;
  sampler_.reset(new DropoutPatternSampler(param_, units, name));
  if (bottom.size() > 1) {
    const string blob = this->layer_param_.bottom_size() > 1
        ? this->layer_param_.bottom(1) : "(unnamed)";
    pattern_bottom_.SetUp(*bottom[1], name, blob, drops_outputs_, K_);
  }
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
void ApproxDropoutInnerProductLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  M_ = ReshapeInnerProductTop(this->layer_param_, K_, *bottom[0], top[0]);
  if (top.size() > 1 &&
      pattern_top_.Reshape(batch_slices_, this->layer_param_.name(), top[1])) {
    WritePatternTop(top[1]);
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
  CHECK(!pattern_bottom_.wired()) << "Layer " << name << ": a layer with a "
      << "pattern bottom keeps compact buffers of its own";
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
  o.ldx = o.x_compact ? g.in.size() : K_;
  o.ldy = o.y_compact ? g.out.size() : N_;
  o.w = g.w_view ? ops.data(*this->blobs_[0]) + g.w_view_offset
                 : ops.data(bufs_->w) + cls.w_base + g.w_offset;
  return o;
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
void ApproxDropoutInnerProductLayer<Dtype>::ForwardWith(
    const ApproxDropoutOps<Dtype>& ops, const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const bool train = this->phase_ == TRAIN;
  sampler_->IterationPatterns(train, batch_slices_, &slice_patterns_);
  scale_ = train ? sampler_->scale() : 1;
  pattern_ = slice_patterns_[0];
  if (pattern_bottom_.wired()) {
    pattern_bottom_.Plan(*bottom[1], shape_, M_, slice_patterns_, &plan_);
  } else {
    plan_.Plan(shape_, M_, slice_patterns_, NULL, false);
  }
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
        const Dtype* xs = x + o.m0 * K_;
        Dtype* ys = y + o.m0 * N_;
        if (o.x_compact) ops.gather(o.rows, row_map, g.in, xs, K_, o.x_compact);
        Dtype* yg = o.y_compact ? o.y_compact : ys + g.out[0];
        ops.gemm(false, true, o.rows, g.out.size(), g.in.size(), scale_,
                 o.x_compact ? o.x_compact : xs + g.in[0], o.ldx, o.w, g.ldw,
                 Dtype(0), yg, o.ldy);
        if (o.y_compact) ops.scatter(o.rows, row_map, g.out, yg, ys, N_, false);
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
        const Dtype* xg = o.x_compact ? o.x_compact : x + o.m0 * K_ + g.in[0];
        if (weight_grad) {
          // In place, or the class's compact dW (scattered below).
          ops.gemm(true, false, nout, nin, o.rows, scale_, dyg, o.ldy, xg,
                   o.ldx, g.w_view || !first_slice ? Dtype(1) : Dtype(0),
                   g.w_view ? dw + g.w_view_offset
                   : ops.mutable_data(&bufs_->dw) + cls.w_base + g.w_offset,
                   g.ldw);
        }
        if (db && drops_outputs_) {
          ops.add_column_sums(o.rows, nout, scale_, dyg, o.ldy, db + g.out[0],
                              g.out.contiguous() ? 1 : g.out.step);
        }
        if (dx) {
          // The compact x has served the weight gradient: dx's compact rows.
          Dtype* dxs = dx + o.m0 * K_;
          Dtype* dxg = o.x_compact ? o.x_compact : dxs + g.in[0];
          ops.gemm(false, false, o.rows, nin, nout, scale_, dyg, o.ldy, o.w,
                   g.ldw, Dtype(0), dxg, o.ldx);
          if (o.x_compact) ops.scatter(o.rows, row_map, g.in, dxg, dxs, K_, false);
        }
      }
      first_slice = false;
    }
    for (const ApproxDropoutGroup& g : cls.groups) {
      if (weight_grad && !g.w_view) {
        ops.scatter(g.out.size(), g.out, g.in,
                    ops.data(bufs_->dw) + cls.w_base + g.w_offset, dw, K_, true);
      }
    }
  }
  if (db && !drops_outputs_) {
    ops.add_column_sums(M_, N_, Dtype(1), dy, N_, db, 1);
  }
  VisitLazyParams(true, weight_grad, bias_grad);
}

template <typename Dtype>
void ApproxDropoutInnerProductLayer<Dtype>::FixPattern(int dp, int b) {
  CHECK(sampler_) << "Layer " << this->layer_param_.name()
                  << ": FixPattern after SetUp";
  sampler_->Fix(dp, b);
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
  const ApproxDropoutPatternBottom& in = pattern_bottom_;
  ApproxDropoutLazyCellSize(shape_, sampler_->dropout_ratio() > 0,
      in.wired() && (in.input_block() || !in.checked()),
      in.wired() && in.checked() && !in.input_block(), blob_index == 1,
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
