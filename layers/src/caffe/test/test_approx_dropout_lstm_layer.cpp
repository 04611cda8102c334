#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/approx_dropout_lstm_layer.hpp"
#include "caffe/layers/lstm_layer.hpp"
#include "caffe/util/approx_dropout_param.hpp"
#include "caffe/util/math_functions.hpp"

#include "caffe/test/approx_dropout_test_util.hpp"
#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

// T = 3 time steps of N = 2 streams, K = 12 input features, H = 5 hidden
// units: W_xc is 20 x 12, cut into 4 x 5 tiles for TILE (5 x 3 = 15 tiles,
// the last tile column 2 wide). Stream 1 restarts at t = 2 (cont = 0).
template <typename TypeParam>
class ApproxDropoutLSTMLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  static constexpr int kT = 3, kN = 2, kK = 12, kH = 5;

  ApproxDropoutLSTMLayerTest()
      : slices_(1), diagonal_(false), block_(false), recurrent_(0),
        rdp_(1), rb_(0) {
    x_.Reshape(kT, kN, 3, 4);
    vector<int> shape(2);
    shape[0] = kT;
    shape[1] = kN;
    cont_.Reshape(shape);
    static_.Reshape(kN, 3, 1, 1);
    FillerParameter filler_param;
    filler_param.set_min(-1);
    filler_param.set_max(1);
    UniformFiller<Dtype> filler(filler_param);
    filler.Fill(&x_);
    filler.Fill(&static_);
    for (int t = 0; t < kT; ++t) {
      for (int n = 0; n < kN; ++n) {
        cont_.mutable_cpu_data()[t * kN + n] = (t > 0 && !(t == 2 && n == 1));
      }
    }
    bottom_.push_back(&x_);
    bottom_.push_back(&cont_);
    top_.push_back(&h_);
  }

  LayerParameter Param(bool tile, float ratio = 0.5) {
    LayerParameter p;
    p.set_name("lstm");
    p.set_type("ApproxDropoutLSTM");
    RecurrentParameter* r = p.mutable_recurrent_param();
    r->set_num_output(kH);
    r->mutable_weight_filler()->set_type("gaussian");
    r->mutable_weight_filler()->set_std(0.3);
    r->mutable_bias_filler()->set_type("gaussian");
    r->mutable_bias_filler()->set_std(0.2);
    ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
    ad->set_dropout_ratio(ratio);
    ad->set_batch_slices(slices_);
    if (tile) {
      ad->set_pattern(ApproxDropoutParameter_Pattern_TILE);
      ad->set_tile_height(4);
      ad->set_tile_width(5);
      ad->set_tile_order(diagonal_
          ? ApproxDropoutParameter_TileOrder_DIAGONAL
          : ApproxDropoutParameter_TileOrder_ROW_MAJOR);
    } else {
      ad->set_layout(block_ ? ApproxDropoutParameter_Layout_BLOCK
                            : ApproxDropoutParameter_Layout_STRIDED);
    }
    if (recurrent_ > 0) ad->set_recurrent_dropout_ratio(recurrent_);
    p.set_phase(TRAIN);
    return p;
  }

  // Is hidden unit u of h_{t-1} kept on the recurrent path by (rdp_, rb_)?
  // The recurrent path uses `layout` for ROW inputs and BLOCK for TILE.
  bool RecurrentKept(bool tile, int u) const {
    if (!tile && !block_) return u % rdp_ == rb_;
    return rb_ * kH / rdp_ <= u && u < (rb_ + 1) * kH / rdp_;
  }

  // ROW: is input feature k kept in row `row` of the time-major input (row
  // t N + n), whose slice s uses offset (b + s) % dp? TILE (one slice only:
  // a masked LSTM has one W): is W_xc[row, k] kept?
  bool Kept(bool tile, int dp, int b, int row, int k) const {
    if (!tile) {
      int s = 0;
      while ((s + 1) * kT * kN / slices_ <= row) ++s;
      const int bs = (b + s) % dp;
      return block_ ? bs * kK / dp <= k && k < (bs + 1) * kK / dp
                    : k % dp == bs;
    }
    const int tiles_per_row = (kK + 4) / 5, r = row / 4, c = k / 5;
    return (diagonal_ ? r + c : r * tiles_per_row + c) % dp == b;
  }

  // Compares ApproxDropoutLSTM with the pattern (dp, b) fixed against
  // Caffe's LSTM fed with the explicitly masked input (ROW) or weights
  // (TILE), both scaled by s: outputs, input and parameter gradients.
  void CheckAgainstMaskedLSTM(bool tile, int dp, int b, bool with_static) {
    const float ratio = 0.5;
    const Dtype s = 1 / (1 - ratio);
    vector<Blob<Dtype>*> bottom(bottom_);
    if (with_static) bottom.push_back(&static_);
    ApproxDropoutLSTMLayer<Dtype> approx(Param(tile, ratio));
    approx.SetUp(bottom, top_);
    approx.input_transform()->FixPattern(dp, b);
    // Recurrent dropout with one pattern for all steps and streams is
    // Caffe's LSTM with W_hc's dropped columns zeroed, kept ones scaled.
    const Dtype rs = 1 / (1 - recurrent_);
    if (recurrent_ > 0) approx.FixRecurrentPattern(rdp_, rb_);

    LayerParameter lp = Param(tile, ratio);
    lp.set_type("LSTM");
    lp.clear_approx_dropout_param();
    LSTMLayer<Dtype> lstm(lp);
    Blob<Dtype> h_ref, x_ref;
    x_ref.CopyFrom(x_, false, true);
    vector<Blob<Dtype>*> ref_bottom(bottom), ref_top(1, &h_ref);
    ref_bottom[0] = &x_ref;
    lstm.SetUp(ref_bottom, ref_top);
    ASSERT_EQ(approx.blobs().size(), lstm.blobs().size());
    for (size_t i = 0; i < approx.blobs().size(); ++i) {
      lstm.blobs()[i]->CopyFrom(*approx.blobs()[i]);
    }
    Blob<Dtype>* w_ref = lstm.blobs()[0].get();  // W_xc, 4H x K
    ASSERT_EQ(w_ref->shape(0), 4 * kH);
    ASSERT_EQ(w_ref->shape(1), kK);
    for (int m = 0; m < kT * kN; ++m) {
      for (int k = 0; k < kK; ++k) {
        if (!tile) {
          x_ref.mutable_cpu_data()[m * kK + k] *=
              Kept(false, dp, b, m, k) ? s : 0;
        }
      }
    }
    if (tile) {
      for (int j = 0; j < 4 * kH; ++j) {
        for (int k = 0; k < kK; ++k) {
          w_ref->mutable_cpu_data()[j * kK + k] *=
              Kept(true, dp, b, j, k) ? s : 0;
        }
      }
    }
    const int w_hc = lstm.blobs().size() - 1;  // W_hc (4H x H) is last
    Blob<Dtype>* w_hc_ref = lstm.blobs()[w_hc].get();
    if (recurrent_ > 0) {
      for (int j = 0; j < 4 * kH; ++j) {
        for (int u = 0; u < kH; ++u) {
          w_hc_ref->mutable_cpu_data()[j * kH + u] *=
              RecurrentKept(tile, u) ? rs : 0;
        }
      }
    }
    approx.Forward(bottom, top_);
    lstm.Forward(ref_bottom, ref_top);
    for (int i = 0; i < h_.count(); ++i) {
      ASSERT_NEAR(h_.cpu_data()[i], h_ref.cpu_data()[i], 1e-5) << i;
    }

    FillerParameter filler_param;
    filler_param.set_min(-1);
    filler_param.set_max(1);
    UniformFiller<Dtype> filler(filler_param);
    Blob<Dtype> dh(h_.shape());
    filler.Fill(&dh);
    caffe_copy(h_.count(), dh.cpu_data(), h_.mutable_cpu_diff());
    caffe_copy(h_.count(), dh.cpu_data(), h_ref.mutable_cpu_diff());
    for (size_t i = 0; i < approx.blobs().size(); ++i) {
      caffe_set(approx.blobs()[i]->count(), Dtype(0),
                approx.blobs()[i]->mutable_cpu_diff());
      caffe_set(lstm.blobs()[i]->count(), Dtype(0),
                lstm.blobs()[i]->mutable_cpu_diff());
    }
    vector<bool> down(bottom.size(), false);
    down[0] = true;
    approx.Backward(top_, down, bottom);
    lstm.Backward(ref_top, down, ref_bottom);
    for (int m = 0; m < kT * kN; ++m) {
      for (int k = 0; k < kK; ++k) {
        const int i = m * kK + k;
        const Dtype factor = tile ? 1 : (Kept(false, dp, b, m, k) ? s : 0);
        ASSERT_NEAR(x_.cpu_diff()[i], factor * x_ref.cpu_diff()[i], 1e-5) << i;
      }
    }
    // W_xc: the approximate layer's gradient is the masked, scaled one for
    // TILE; for ROW the masked input already zeroes the dropped columns.
    for (int j = 0; j < 4 * kH; ++j) {
      for (int k = 0; k < kK; ++k) {
        const int i = j * kK + k;
        const Dtype factor = tile ? (Kept(true, dp, b, j, k) ? s : 0) : 1;
        ASSERT_NEAR(approx.blobs()[0]->cpu_diff()[i],
                    factor * lstm.blobs()[0]->cpu_diff()[i], 1e-5) << i;
      }
    }
    const int num_params = approx.blobs().size();
    for (int p = 1; p < num_params; ++p) {  // b_c, W_hc, ...
      for (int i = 0; i < approx.blobs()[p]->count(); ++i) {
        // W_hc's dropped columns get no gradient, kept ones d/dW_hc' * rs.
        const Dtype factor = p != w_hc || recurrent_ == 0 ? 1
            : (RecurrentKept(tile, i % kH) ? rs : 0);
        ASSERT_NEAR(approx.blobs()[p]->cpu_diff()[i],
                    factor * lstm.blobs()[p]->cpu_diff()[i], 1e-5)
            << p << " " << i;
      }
    }
  }

  // Many TRAIN iterations with sampled patterns: every input feature (ROW)
  // or tile (TILE) is dropped with frequency within 3 sigma of p, the dp
  // follow the distribution, and the dropped features get no gradient.
  void CheckStatistics(bool tile) {
    Caffe::set_random_seed(4321);
    LayerParameter p = Param(tile, 0.61);
    const double k[] = {0.1, 0.2, 0.3, 0.2, 0.2};  // rate 0.61
    for (double v : k) {
      p.mutable_approx_dropout_param()->add_pattern_distribution(v);
    }
    ApproxDropoutLSTMLayer<Dtype> layer(p);
    layer.SetUp(bottom_, top_);
    const double rate = PatternDropoutRate(std::vector<double>(k, k + 5));
    const int trials = 4000, units = tile ? 15 : kK;
    std::vector<int> dropped(units, 0), dp_count(5, 0);
    vector<bool> down(2, false);
    down[0] = true;
    for (int t = 0; t < trials; ++t) {
      layer.Forward(bottom_, top_);
      const DropoutPattern pattern = layer.input_transform()->pattern();
      ASSERT_GE(pattern.dp, 1);
      ASSERT_LE(pattern.dp, 5);
      ++dp_count[pattern.dp - 1];
      for (int u = 0; u < units; ++u) dropped[u] += !StridedKept(pattern, u);
      if (!tile && t % 400 == 0) {
        caffe_set(h_.count(), Dtype(1), h_.mutable_cpu_diff());
        layer.Backward(top_, down, bottom_);
        for (int m = 0; m < kT * kN; ++m) {
          for (int f = 0; f < kK; ++f) {
            if (!StridedKept(pattern, f)) {
              ASSERT_EQ(x_.cpu_diff()[m * kK + f], 0) << t << " " << f;
            }
          }
        }
      }
    }
    ExpectPatternStatistics(dropped, dp_count, std::vector<double>(k, k + 5),
                            trials, rate);
  }

  void CheckGradient(bool tile, int dp, int b, bool with_static) {
    vector<Blob<Dtype>*> bottom(bottom_);
    if (with_static) bottom.push_back(&static_);
    ApproxDropoutLSTMLayer<Dtype> layer(Param(tile));
    layer.SetUp(bottom, top_);
    layer.input_transform()->FixPattern(dp, b);
    if (recurrent_ > 0) layer.FixRecurrentPattern(rdp_, rb_);
    GradientChecker<Dtype> checker(1e-2, 1e-3);
    checker.CheckGradientExhaustive(&layer, bottom, top_, 0);
    if (with_static) checker.CheckGradientExhaustive(&layer, bottom, top_, 2);
  }

  Blob<Dtype> x_, cont_, static_, h_;
  vector<Blob<Dtype>*> bottom_, top_;
  int slices_;     // batch_slices of Param()
  bool diagonal_;  // tile_order of Param()
  bool block_;     // layout of Param() (ROW)
  float recurrent_;  // recurrent_dropout_ratio of Param()
  int rdp_, rb_;     // the fixed recurrent pattern of the checks
};

TYPED_TEST_CASE(ApproxDropoutLSTMLayerTest, TestDtypesAndDevices);

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestSetUp) {
  typedef typename TypeParam::Dtype Dtype;
  ApproxDropoutLSTMLayer<Dtype> layer(this->Param(false));
  layer.SetUp(this->bottom_, this->top_);
  EXPECT_EQ(this->h_.shape(0), this->kT);
  EXPECT_EQ(this->h_.shape(1), this->kN);
  EXPECT_EQ(this->h_.shape(2), this->kH);
  ASSERT_EQ(layer.blobs().size(), 3);  // W_xc, b_c, W_hc: LSTM's blobs
  EXPECT_EQ(layer.blobs()[0]->shape(1), this->kK);
  ASSERT_TRUE(layer.input_transform() != NULL);
  EXPECT_EQ(layer.input_transform()->sampler().dropout_ratio(), 0.5f);
}

// Tiles of W_xc take tile_order and its default slices to the inner layer:
// unset, DIAGONAL with one slice; BLOCKS with four.
TYPED_TEST(ApproxDropoutLSTMLayerTest, TestTileOrderDefault) {
  typedef typename TypeParam::Dtype Dtype;
  for (int set = 0; set < 2; ++set) {
    LayerParameter p = this->Param(true);
    p.mutable_approx_dropout_param()->clear_batch_slices();
    p.mutable_approx_dropout_param()->clear_tile_order();
    if (set) {
      p.mutable_approx_dropout_param()->set_tile_order(
          ApproxDropoutParameter_TileOrder_BLOCKS);
    }
    ApproxDropoutLSTMLayer<Dtype> layer(p);
    layer.SetUp(this->bottom_, this->top_);
    ASSERT_TRUE(layer.input_transform() != NULL);
    const ApproxDropoutParameter& inner =
        layer.input_transform()->layer_param().approx_dropout_param();
    EXPECT_EQ(inner.tile_order(), set ? ApproxDropoutParameter_TileOrder_BLOCKS
                                      : ApproxDropoutParameter_TileOrder_DIAGONAL);
    EXPECT_EQ(DefaultBatchSlices(inner), set ? 4 : 1);
  }
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestRowMatchesMaskedInput) {
  const int dps[] = {1, 2, 3, 5, 12};
  for (int dp : dps) {
    for (int b = 0; b < dp; b += (dp > 3 ? 2 : 1)) {
      this->CheckAgainstMaskedLSTM(false, dp, b, false);
    }
  }
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestTileMatchesMaskedWeights) {
  const int dps[] = {1, 2, 4, 7, 15};
  for (int dp : dps) {
    for (int b = 0; b < dp; b += (dp > 4 ? 3 : 1)) {
      this->CheckAgainstMaskedLSTM(true, dp, b, false);
    }
  }
}

// Slices of x_transform's time-major rows are blocks of time steps: with 3
// slices over T = 3 steps of 2 streams each step has its own offset; with 4
// the slices are uneven (1, 2, 1, 2 rows) and cut through a step.
TYPED_TEST(ApproxDropoutLSTMLayerTest, TestRowSlicesMatchMaskedInput) {
  const int slices[] = {3, 4};
  for (int S : slices) {
    this->slices_ = S;
    this->CheckAgainstMaskedLSTM(false, 3, 1, false);
    this->CheckAgainstMaskedLSTM(false, 2, 1, true);
  }
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestTileDiagonalMatchesMaskedWeights) {
  this->diagonal_ = true;
  const int dps[] = {1, 2, 3, 7};
  for (int dp : dps) {
    for (int b = 0; b < dp; b += (dp > 3 ? 3 : 1)) {
      this->CheckAgainstMaskedLSTM(true, dp, b, false);
    }
  }
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestGradientSlices) {
  this->slices_ = 4;
  this->diagonal_ = true;
  this->CheckGradient(false, 3, 2, false);
  this->CheckGradient(true, 2, 1, true);
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestStaticInputMatches) {
  this->CheckAgainstMaskedLSTM(false, 3, 1, true);
  this->CheckAgainstMaskedLSTM(true, 2, 0, true);
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestGradientRow) {
  this->CheckGradient(false, 3, 2, false);
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestGradientTile) {
  this->CheckGradient(true, 4, 1, false);
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestGradientRowWithStaticInput) {
  this->CheckGradient(false, 2, 1, true);
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestStatisticsRow) {
  this->CheckStatistics(false);
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestStatisticsTile) {
  this->CheckStatistics(true);
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestPhaseEqualsLSTM) {
  typedef typename TypeParam::Dtype Dtype;
  this->recurrent_ = 0.5;  // TEST ignores input and recurrent dropout
  for (int tile = 0; tile < 2; ++tile) {
    LayerParameter p = this->Param(tile, 0.7);
    p.set_phase(TEST);
    ApproxDropoutLSTMLayer<Dtype> approx(p);
    approx.SetUp(this->bottom_, this->top_);
    approx.Forward(this->bottom_, this->top_);
    p.set_type("LSTM");
    p.clear_approx_dropout_param();
    LSTMLayer<Dtype> lstm(p);
    Blob<Dtype> h_ref;
    vector<Blob<Dtype>*> ref_top(1, &h_ref);
    lstm.SetUp(this->bottom_, ref_top);
    for (size_t i = 0; i < approx.blobs().size(); ++i) {
      lstm.blobs()[i]->CopyFrom(*approx.blobs()[i]);
    }
    lstm.Forward(this->bottom_, ref_top);
    for (int i = 0; i < h_ref.count(); ++i) {
      EXPECT_NEAR(this->h_.cpu_data()[i], h_ref.cpu_data()[i], 1e-6);
    }
  }
}

// Recurrent dropout: every recurrent pattern in both layouts against a
// masked W_hc, with ROW (either layout) and TILE on the input.
TYPED_TEST(ApproxDropoutLSTMLayerTest, TestRecurrentMatchesMaskedWeights) {
  this->recurrent_ = 0.5;
  for (int layout = 0; layout < 2; ++layout) {
    this->block_ = layout == 1;
    for (int rdp = 1; rdp <= this->kH; ++rdp) {
      for (int rb = 0; rb < rdp; rb += 2) {
        this->rdp_ = rdp;
        this->rb_ = rb;
        this->CheckAgainstMaskedLSTM(false, 3, 1, false);
        this->CheckAgainstMaskedLSTM(true, 2, 1, rb == 0);
      }
    }
  }
}

TYPED_TEST(ApproxDropoutLSTMLayerTest, TestGradientRecurrent) {
  this->recurrent_ = 0.5;
  this->rdp_ = 3;
  this->rb_ = 1;
  this->CheckGradient(false, 2, 1, false);
  this->block_ = true;
  this->CheckGradient(false, 3, 0, true);
  this->rdp_ = 2;
  this->CheckGradient(true, 2, 1, false);
}

// recurrent_dropout_ratio: 0 is the layer without the field: same seed,
// same outputs, and no recurrent product replaced.
TYPED_TEST(ApproxDropoutLSTMLayerTest, TestRecurrentZeroIsInputOnly) {
  typedef typename TypeParam::Dtype Dtype;
  std::vector<std::vector<Dtype> > outputs(2);
  for (int zero = 0; zero < 2; ++zero) {
    LayerParameter p = this->Param(false, 0.5);
    if (zero) p.mutable_approx_dropout_param()->set_recurrent_dropout_ratio(0);
    Caffe::set_random_seed(99);
    ApproxDropoutLSTMLayer<Dtype> layer(p);
    layer.SetUp(this->bottom_, this->top_);
    EXPECT_TRUE(layer.recurrent_transforms().empty());
    for (int t = 0; t < 5; ++t) {
      layer.Forward(this->bottom_, this->top_);
      outputs[zero].insert(outputs[zero].end(), this->h_.cpu_data(),
                           this->h_.cpu_data() + this->h_.count());
    }
  }
  ASSERT_EQ(outputs[0].size(), outputs[1].size());
  for (size_t i = 0; i < outputs[0].size(); ++i) {
    EXPECT_NEAR(outputs[0][i], outputs[1][i], 1e-6) << i;
  }
}

// Sampled recurrent patterns: each hidden unit is dropped on the recurrent
// path with frequency within 3 sigma of the rate, the dp follow the given
// distribution; PER_SEQUENCE uses one pattern for every step, PER_STEP
// draws one per step.
TYPED_TEST(ApproxDropoutLSTMLayerTest, TestRecurrentStatistics) {
  typedef typename TypeParam::Dtype Dtype;
  const double k[] = {0.1, 0.2, 0.3, 0.2, 0.2};  // rate 0.61
  const double rate = PatternDropoutRate(std::vector<double>(k, k + 5));
  for (int per_sequence = 0; per_sequence < 2; ++per_sequence) {
    for (int layout = 0; layout < 2; ++layout) {
      Caffe::set_random_seed(2024 + layout);
      this->block_ = layout == 1;
      LayerParameter p = this->Param(false, 0.5);
      ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
      ad->set_recurrent_dropout_ratio(0.61);
      for (double v : k) ad->add_recurrent_pattern_distribution(v);
      ad->set_recurrent_pattern(per_sequence
          ? ApproxDropoutParameter_RecurrentPattern_PER_SEQUENCE
          : ApproxDropoutParameter_RecurrentPattern_PER_STEP);
      ApproxDropoutLSTMLayer<Dtype> layer(p);
      layer.SetUp(this->bottom_, this->top_);
      ASSERT_EQ(layer.recurrent_transforms().size(), this->kT);
      const int trials = 3000;
      std::vector<int> dropped(this->kH, 0), dp_count(5, 0);
      int steps_differ = 0;
      for (int t = 0; t < trials; ++t) {
        layer.Forward(this->bottom_, this->top_);
        const DropoutPattern first =
            layer.recurrent_transforms()[0]->pattern();
        ++dp_count[first.dp - 1];
        this->rdp_ = first.dp;
        this->rb_ = first.b;
        for (int u = 0; u < this->kH; ++u) {
          dropped[u] += !this->RecurrentKept(false, u);
        }
        for (int step = 1; step < this->kT; ++step) {
          const DropoutPattern other =
              layer.recurrent_transforms()[step]->pattern();
          steps_differ += other.dp != first.dp || other.b != first.b;
        }
      }
      ExpectPatternStatistics(dropped, dp_count,
          std::vector<double>(k, k + 5), trials, rate);
      if (per_sequence) {
        EXPECT_EQ(steps_differ, 0);
      } else {
        EXPECT_GT(steps_differ, trials / 2);
      }
    }
  }
}

// The unrolled steps share one set of compact buffers (not T gathered
// copies of W_hc); with a pattern per step (STRIDED: W_hc's kept columns are
// gathered) each step's backward still uses its own pattern's W: the same
// outputs and gradients as steps with buffers of their own.
TYPED_TEST(ApproxDropoutLSTMLayerTest, TestRecurrentStepsShareBuffers) {
  typedef typename TypeParam::Dtype Dtype;
  // dp 2 or 3 (rate 7/12): mostly kept columns that are gathered, not views.
  const double k[] = {0, 0.5, 0.5};
  std::vector<std::vector<Dtype> > values(2);
  for (int own = 0; own < 2; ++own) {
    LayerParameter p = this->Param(false, 0.5);
    ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
    ad->set_recurrent_dropout_ratio(7.0 / 12);
    for (double v : k) ad->add_recurrent_pattern_distribution(v);
    ad->set_recurrent_pattern(
        ApproxDropoutParameter_RecurrentPattern_PER_STEP);
    Caffe::set_random_seed(4242);
    ApproxDropoutLSTMLayer<Dtype> layer(p);
    layer.SetUp(this->bottom_, this->top_);
    const vector<ApproxDropoutInnerProductLayer<Dtype>*>& steps =
        layer.recurrent_transforms();
    ASSERT_EQ(steps.size(), this->kT);
    for (int t = 1; t < this->kT; ++t) {
      EXPECT_EQ(steps[t]->compact_buffers(), steps[0]->compact_buffers());
    }
    if (own) {
      for (int t = 0; t < this->kT; ++t) {
        steps[t]->ShareCompactBuffers(shared_ptr<ApproxDropoutSharedBuffers<
            Dtype> >(new ApproxDropoutSharedBuffers<Dtype>()));
      }
    }
    int steps_differ = 0;
    for (int iter = 0; iter < 6; ++iter) {
      layer.Forward(this->bottom_, this->top_);
      for (int t = 1; t < this->kT; ++t) {
        steps_differ += steps[t]->pattern().dp != steps[0]->pattern().dp ||
                        steps[t]->pattern().b != steps[0]->pattern().b;
      }
      for (int i = 0; i < this->h_.count(); ++i) {
        this->h_.mutable_cpu_diff()[i] = std::sin(0.7 * i + iter);
      }
      for (size_t i = 0; i < layer.blobs().size(); ++i) {
        caffe_set(layer.blobs()[i]->count(), Dtype(0),
                  layer.blobs()[i]->mutable_cpu_diff());
      }
      vector<bool> propagate_down(2, false);
      propagate_down[0] = true;
      layer.Backward(this->top_, propagate_down, this->bottom_);
      values[own].insert(values[own].end(), this->h_.cpu_data(),
                         this->h_.cpu_data() + this->h_.count());
      values[own].insert(values[own].end(), this->x_.cpu_diff(),
                         this->x_.cpu_diff() + this->x_.count());
      for (size_t i = 0; i < layer.blobs().size(); ++i) {
        const Blob<Dtype>& b = *layer.blobs()[i];
        values[own].insert(values[own].end(), b.cpu_diff(),
                           b.cpu_diff() + b.count());
      }
    }
    EXPECT_GT(steps_differ, 0) << "no step used another pattern";
  }
  ASSERT_EQ(values[0].size(), values[1].size());
  for (size_t i = 0; i < values[0].size(); ++i) {
    EXPECT_NEAR(values[0][i], values[1][i],
                1e-6 * std::max(Dtype(1), std::fabs(values[1][i]))) << i;
  }
}

// cont = 0 still cuts the sequence with recurrent dropout on: stream 1's
// output from its restart at t = 2 on ignores its earlier inputs.
TYPED_TEST(ApproxDropoutLSTMLayerTest, TestRecurrentContinuationResets) {
  typedef typename TypeParam::Dtype Dtype;
  this->recurrent_ = 0.5;
  std::vector<std::vector<Dtype> > outputs(2);
  for (int run = 0; run < 2; ++run) {
    if (run == 1) {  // change stream 1's inputs at t = 0, 1
      for (int t = 0; t < 2; ++t) {
        Dtype* x = this->x_.mutable_cpu_data() + (t * this->kN + 1) * this->kK;
        for (int f = 0; f < this->kK; ++f) x[f] = 3 - x[f];
      }
    }
    Caffe::set_random_seed(7);
    ApproxDropoutLSTMLayer<Dtype> layer(this->Param(false, 0.5));
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    outputs[run].assign(this->h_.cpu_data(),
                        this->h_.cpu_data() + this->h_.count());
  }
  Dtype before = 0;  // stream 1 at t = 1 did change
  for (int u = 0; u < this->kH; ++u) {
    const int i = (this->kN + 1) * this->kH + u;
    before += std::fabs(outputs[0][i] - outputs[1][i]);
    const int j = (2 * this->kN + 1) * this->kH + u;  // t = 2, stream 1
    EXPECT_NEAR(outputs[0][j], outputs[1][j], 1e-6) << "unit " << u;
  }
  EXPECT_GT(before, 1e-3);
}

// Bad parameters fail at setup with messages that name the layer (the
// unrolled input transform is "<layer>_x_transform") and the parameter.
class ApproxDropoutLSTMDeathTest : public ::testing::Test {
 protected:
  LayerParameter Base() {
    LayerParameter p;
    p.set_name("lstm1");
    p.mutable_recurrent_param()->set_num_output(4);
    p.mutable_approx_dropout_param()->set_dropout_ratio(0.5);
    p.set_phase(TRAIN);
    return p;
  }
  void ExpectSetupDeath(const LayerParameter& p, const std::string& message) {
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
    Blob<float> x(2, 3, 12, 1), cont(2, 3, 1, 1), h;
    vector<int> cont_shape(2);
    cont_shape[0] = 2;
    cont_shape[1] = 3;
    cont.Reshape(cont_shape);
    vector<Blob<float>*> bottom, top(1, &h);
    bottom.push_back(&x);
    bottom.push_back(&cont);
    ApproxDropoutLSTMLayer<float> layer(p);
    EXPECT_DEATH(layer.SetUp(bottom, top), message);
  }
};

TEST_F(ApproxDropoutLSTMDeathTest, RateOne) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_dropout_ratio(1);
  ExpectSetupDeath(p, "Layer lstm1_x_transform: approx_dropout_param."
                      "dropout_ratio must be in \\[0, 1\\), got 1");
}

TEST_F(ApproxDropoutLSTMDeathTest, SideOutput) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_side(
      ApproxDropoutParameter_Side_OUTPUT);
  ExpectSetupDeath(p, "Layer lstm1: approx_dropout_param.side: "
                      "ApproxDropoutLSTM always drops its input");
}

TEST_F(ApproxDropoutLSTMDeathTest, TileWiderThanInput) {
  LayerParameter p = Base();
  p.mutable_recurrent_param()->set_num_output(8);  // W_xc is 32 x 12
  p.mutable_approx_dropout_param()->set_pattern(
      ApproxDropoutParameter_Pattern_TILE);
  ExpectSetupDeath(p, "Layer lstm1_x_transform: approx_dropout_param."
                      "tile_width \\(32\\) is larger than the weight matrix's "
                      "input size K \\(12\\)");
}

TEST_F(ApproxDropoutLSTMDeathTest, DpBeyondInputFeatures) {
  LayerParameter p = Base();
  ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
  for (int i = 0; i < 12; ++i) ad->add_pattern_distribution(0);
  ad->add_pattern_distribution(1);  // dp = 13 > 12 input features
  ad->set_dropout_ratio(12.0 / 13);
  ExpectSetupDeath(p, "gives dp = 13 probability 1, but the pattern acts on "
                      "only 12 units");
}

TEST_F(ApproxDropoutLSTMDeathTest, RecurrentRateOne) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_recurrent_dropout_ratio(1);
  ExpectSetupDeath(p, "Layer lstm1: approx_dropout_param.recurrent_dropout_"
                      "ratio must be in \\[0, 1\\), got 1");
}

TEST_F(ApproxDropoutLSTMDeathTest, RecurrentRateNegative) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_recurrent_dropout_ratio(-0.1);
  ExpectSetupDeath(p, "recurrent_dropout_ratio must be in \\[0, 1\\)");
}

TEST_F(ApproxDropoutLSTMDeathTest, RecurrentDistributionMisses) {
  LayerParameter p = Base();
  ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
  ad->set_recurrent_dropout_ratio(0.5);
  ad->add_recurrent_pattern_distribution(0);
  ad->add_recurrent_pattern_distribution(0);
  ad->add_recurrent_pattern_distribution(1);  // dp = 3: rate 2/3
  ExpectSetupDeath(p, "Layer lstm1: approx_dropout_param.recurrent_pattern_"
                      "distribution drops units with probability 0.66");
}

TEST_F(ApproxDropoutLSTMDeathTest, RecurrentDpBeyondHidden) {
  LayerParameter p = Base();  // 4 hidden units
  ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
  ad->set_recurrent_dropout_ratio(0.8);
  for (int i = 0; i < 4; ++i) ad->add_recurrent_pattern_distribution(0);
  ad->add_recurrent_pattern_distribution(1);  // dp = 5
  ExpectSetupDeath(p, "recurrent_pattern_distribution gives dp = 5 "
                      "probability 1, but the pattern acts on only 4 units");
}

TEST_F(ApproxDropoutLSTMDeathTest, LayoutWithTile) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_pattern(
      ApproxDropoutParameter_Pattern_TILE);
  p.mutable_approx_dropout_param()->set_layout(
      ApproxDropoutParameter_Layout_BLOCK);
  ExpectSetupDeath(p, "Layer lstm1: approx_dropout_param.layout applies to "
                      "ROW input patterns");
}

}  // namespace caffe
