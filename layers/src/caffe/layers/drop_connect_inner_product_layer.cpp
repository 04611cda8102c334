#include <stdint.h>

#include <algorithm>
#include <string>
#include <vector>

#include "caffe/layers/drop_connect_inner_product_layer.hpp"
#include "caffe/util/inner_product_setup.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/rng.hpp"

namespace caffe {

namespace {

// The settings the layer refuses, named; K: its input size.
void CheckDropConnectParam(const LayerParameter& layer, int K) {
  const InnerProductParameter& ip = layer.inner_product_param();
  const ApproxDropoutParameter& param = layer.approx_dropout_param();
  const std::string where =
      "Layer " + layer.name() + ": approx_dropout_param.";
  CHECK(!ip.transpose()) << "Layer " << layer.name() << ": inner_product_"
      << "param.transpose: true is not supported by DropConnectInnerProduct";
  CHECK_GE(ip.num_output(), 1) << "Layer " << layer.name()
      << ": inner_product_param.num_output must be positive";
  CHECK(param.dropout_ratio() >= 0 && param.dropout_ratio() < 1) << where
      << "dropout_ratio must be in [0, 1), got " << param.dropout_ratio();
  CHECK(!param.has_pattern() && !param.has_side() &&
        param.pattern_distribution_size() == 0 && !param.has_layout() &&
        !param.has_tile_order() && !param.has_recurrent_dropout_ratio() &&
        param.recurrent_pattern_distribution_size() == 0 &&
        !param.has_recurrent_pattern()) << where << "pattern, side, "
      << "pattern_distribution, layout, tile_order and the recurrent fields "
      << "set regular patterns; DropConnectInnerProduct reads dropout_ratio, "
      << "drop_connect_unit, tile_height, tile_width and batch_slices only";
  if (param.has_batch_slices()) {
    CHECK_GE(param.batch_slices(), 1) << where << "batch_slices must be >= 1 "
        << "(1 is one mask for the whole batch), got "
        << param.batch_slices();
    CHECK_LE(param.batch_slices(), 1u << 20) << where << "batch_slices ("
        << param.batch_slices() << ") is absurdly large";
  }
  if (param.drop_connect_unit() ==
      ApproxDropoutParameter_DropConnectUnit_DROP_CONNECT_WEIGHT) {
    CHECK(!param.has_tile_height() && !param.has_tile_width()) << where
        << "tile_height and tile_width apply to drop_connect_unit: "
        << "DROP_CONNECT_TILE only";
  } else {
    CHECK_GE(param.tile_height(), 1) << where << "tile_height must be >= 1";
    CHECK_GE(param.tile_width(), 1) << where << "tile_width must be >= 1";
    CHECK_LE(param.tile_height(), ip.num_output()) << where << "tile_height ("
        << param.tile_height() << ") is larger than the weight matrix's "
        << "num_output (" << ip.num_output() << ")";
    CHECK_LE(param.tile_width(), K) << where << "tile_width ("
        << param.tile_width() << ") is larger than the weight matrix's "
        << "input size K (" << K << ")";
  }
}

}  // namespace

template <typename Dtype>
void DropConnectInnerProductLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const InnerProductParameter& ip = this->layer_param_.inner_product_param();
  const ApproxDropoutParameter& param =
      this->layer_param_.approx_dropout_param();
  K_ = bottom[0]->count(bottom[0]->CanonicalAxisIndex(ip.axis()));
  CheckDropConnectParam(this->layer_param_, K_);
  N_ = ip.num_output();
  bias_term_ = ip.bias_term();
  ratio_ = param.dropout_ratio();
  scale_ = Dtype(1) / (Dtype(1) - Dtype(ratio_));
  slices_ = param.has_batch_slices() ? param.batch_slices() : 1;
  weight_unit_ = param.drop_connect_unit() ==
      ApproxDropoutParameter_DropConnectUnit_DROP_CONNECT_WEIGHT;
  tile_h_ = weight_unit_ ? 1 : param.tile_height();
  tile_w_ = weight_unit_ ? 1 : param.tile_width();
  unit_rows_ = (N_ + tile_h_ - 1) / tile_h_;
  unit_cols_ = (K_ + tile_w_ - 1) / tile_w_;
  masked_ = false;
  // one byte per mask unit and slice: refuse what could not be allocated
  const double mask_bytes = static_cast<double>(slices_) * unit_rows_ *
                            unit_cols_;
  CHECK_LE(mask_bytes, 1 << 30) << "Layer " << this->layer_param_.name()
      << ": approx_dropout_param.batch_slices (" << slices_ << ") needs "
      << mask_bytes << " bytes of masks (more than 1 GiB)";
  mask_.assign(static_cast<size_t>(mask_bytes), 1);

  SetUpInnerProductBlobs(this->layer_param_, K_, &this->blobs_);
  this->param_propagate_down_.resize(this->blobs_.size(), true);
  vector<int> weight_shape(2);
  weight_shape[0] = N_;
  weight_shape[1] = K_;
  masked_w_.Reshape(weight_shape);
  w_grad_.Reshape(weight_shape);
}

template <typename Dtype>
void DropConnectInnerProductLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  M_ = ReshapeInnerProductTop(this->layer_param_, K_, *bottom[0], top[0]);
  if (bias_term_) {
    bias_multiplier_.Reshape(vector<int>(1, M_));
    caffe_set(M_, Dtype(1), bias_multiplier_.mutable_cpu_data());
  }
}

template <typename Dtype>
int DropConnectInnerProductLayer<Dtype>::SliceBegin(int s) const {
  return static_cast<int>(static_cast<int64_t>(s) * M_ / slices_);
}

template <typename Dtype>
bool DropConnectInnerProductLayer<Dtype>::kept(int s, int j, int k) const {
  return mask_[(static_cast<size_t>(s) * unit_rows_ + j / tile_h_) *
               unit_cols_ + k / tile_w_] != 0;
}

template <typename Dtype>
void DropConnectInnerProductLayer<Dtype>::MaskWeights(int s) {
  const Dtype* w = this->blobs_[0]->cpu_data();
  Dtype* masked = masked_w_.mutable_cpu_data();
  const unsigned char* mask =
      &mask_[static_cast<size_t>(s) * unit_rows_ * unit_cols_];
  if (weight_unit_) {
    // one mask byte per weight, half of them 0: a branch per weight would be
    // mispredicted half the time; the gate is exactly scale or 0, as below
    const int count = N_ * K_;
    const Dtype scale = scale_;
    for (int i = 0; i < count; ++i) {
      masked[i] = (scale * static_cast<Dtype>(mask[i])) * w[i];
    }
    return;
  }
  for (int j = 0; j < N_; ++j) {
    const unsigned char* mask_row = mask + (j / tile_h_) * unit_cols_;
    // runs of one mask unit: no division per weight
    for (int c = 0, k0 = 0; c < unit_cols_; ++c, k0 += tile_w_) {
      const int k1 = std::min(K_, k0 + tile_w_);
      const Dtype gate = mask_row[c] ? scale_ : Dtype(0);
      for (int k = k0; k < k1; ++k) masked[j * K_ + k] = gate * w[j * K_ + k];
    }
  }
}

template <typename Dtype>
void DropConnectInnerProductLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const Dtype* x = bottom[0]->cpu_data();
  Dtype* y = top[0]->mutable_cpu_data();
  masked_ = this->phase_ == TRAIN && ratio_ > 0;
  if (!masked_) {
    caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasTrans, M_, N_, K_, Dtype(1), x,
                          this->blobs_[0]->cpu_data(), Dtype(0), y);
  } else {
    // keep iff a uniform 32-bit draw < (1 - p) 2^32: probability 1 - p
    const uint64_t threshold = static_cast<uint64_t>(
        (1.0 - static_cast<double>(ratio_)) * 4294967296.0);
    rng_t* rng = caffe_rng();
    for (size_t i = 0; i < mask_.size(); ++i) {
      mask_[i] = static_cast<uint64_t>((*rng)()) < threshold;
    }
    for (int s = 0; s < slices_; ++s) {
      const int m0 = SliceBegin(s), rows = SliceBegin(s + 1) - m0;
      if (rows == 0) continue;
      MaskWeights(s);
      caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasTrans, rows, N_, K_, Dtype(1),
                            x + m0 * K_, masked_w_.cpu_data(), Dtype(0),
                            y + m0 * N_);
    }
  }
  if (bias_term_) {
    caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, M_, N_, 1, Dtype(1),
                          bias_multiplier_.cpu_data(),
                          this->blobs_[1]->cpu_data(), Dtype(1), y);
  }
}

template <typename Dtype>
void DropConnectInnerProductLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const Dtype* dy = top[0]->cpu_diff();
  const Dtype* x = bottom[0]->cpu_data();
  if (bias_term_ && this->param_propagate_down_[1]) {
    caffe_cpu_gemv<Dtype>(CblasTrans, M_, N_, Dtype(1), dy,
                          bias_multiplier_.cpu_data(), Dtype(1),
                          this->blobs_[1]->mutable_cpu_diff());
  }
  if (!masked_) {
    if (this->param_propagate_down_[0]) {
      caffe_cpu_gemm<Dtype>(CblasTrans, CblasNoTrans, N_, K_, M_, Dtype(1),
                            dy, x, Dtype(1),
                            this->blobs_[0]->mutable_cpu_diff());
    }
    if (propagate_down[0]) {
      caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, M_, K_, N_, Dtype(1),
                            dy, this->blobs_[0]->cpu_data(), Dtype(0),
                            bottom[0]->mutable_cpu_diff());
    }
    return;
  }
  for (int s = 0; s < slices_; ++s) {
    const int m0 = SliceBegin(s), rows = SliceBegin(s + 1) - m0;
    if (rows == 0) continue;
    if (this->param_propagate_down_[0]) {
      // dW += s (dy_s^T x_s) . mask_s
      caffe_cpu_gemm<Dtype>(CblasTrans, CblasNoTrans, N_, K_, rows, Dtype(1),
                            dy + m0 * N_, x + m0 * K_, Dtype(0),
                            w_grad_.mutable_cpu_data());
      const Dtype* g = w_grad_.cpu_data();
      Dtype* dw = this->blobs_[0]->mutable_cpu_diff();
      const unsigned char* mask =
          &mask_[static_cast<size_t>(s) * unit_rows_ * unit_cols_];
      if (weight_unit_) {  // branch-free, as in MaskWeights: adds 0 if dropped
        const int count = N_ * K_;
        const Dtype scale = scale_;
        for (int i = 0; i < count; ++i) {
          dw[i] += (scale * static_cast<Dtype>(mask[i])) * g[i];
        }
      } else {
        for (int j = 0; j < N_; ++j) {
          const unsigned char* mask_row = mask + (j / tile_h_) * unit_cols_;
          for (int c = 0, k0 = 0; c < unit_cols_; ++c, k0 += tile_w_) {
            if (!mask_row[c]) continue;
            const int k1 = std::min(K_, k0 + tile_w_);
            for (int k = k0; k < k1; ++k) {
              dw[j * K_ + k] += scale_ * g[j * K_ + k];
            }
          }
        }
      }
    }
    if (propagate_down[0]) {
      MaskWeights(s);  // from W as it is now, as dW is
      caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, rows, K_, N_,
                            Dtype(1), dy + m0 * N_, masked_w_.cpu_data(),
                            Dtype(0), bottom[0]->mutable_cpu_diff() + m0 * K_);
    }
  }
}

INSTANTIATE_CLASS(DropConnectInnerProductLayer);
REGISTER_LAYER_CLASS(DropConnectInnerProduct);

}  // namespace caffe
