#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/drop_connect_inner_product_layer.hpp"
#include "caffe/layers/inner_product_layer.hpp"
#include "caffe/util/math_functions.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

template <typename TypeParam>
class DropConnectInnerProductLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  // M = 3 rows, K = 12, num_output 13, 4 x 5 tiles: edge tiles are short in
  // both directions (4 x 3 tiles).
  DropConnectInnerProductLayerTest()
      : blob_bottom_(new Blob<Dtype>(3, 2, 3, 2)), blob_top_(new Blob<Dtype>()),
        slices_(1) {
    Fill(blob_bottom_, -1, 1);
    blob_bottom_vec_.push_back(blob_bottom_);
    blob_top_vec_.push_back(blob_top_);
  }
  virtual ~DropConnectInnerProductLayerTest() {
    delete blob_bottom_;
    delete blob_top_;
  }

  static void Fill(Blob<Dtype>* blob, double lo, double hi) {
    FillerParameter filler_param;
    filler_param.set_min(lo);
    filler_param.set_max(hi);
    UniformFiller<Dtype>(filler_param).Fill(blob);
  }

  LayerParameter Param(bool weight_unit, bool bias, float ratio) {
    LayerParameter p;
    p.set_name("fc");
    p.set_type("DropConnectInnerProduct");
    p.set_phase(TRAIN);
    InnerProductParameter* ip = p.mutable_inner_product_param();
    ip->set_num_output(13);
    ip->set_bias_term(bias);
    ip->mutable_weight_filler()->set_type("uniform");
    ip->mutable_weight_filler()->set_min(-1);
    ip->mutable_weight_filler()->set_max(1);
    ip->mutable_bias_filler()->set_type("uniform");
    ip->mutable_bias_filler()->set_min(1);
    ip->mutable_bias_filler()->set_max(2);
    ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
    ad->set_dropout_ratio(ratio);
    ad->set_batch_slices(slices_);
    if (weight_unit) {
      ad->set_drop_connect_unit(
          ApproxDropoutParameter_DropConnectUnit_DROP_CONNECT_WEIGHT);
    } else {
      ad->set_tile_height(4);
      ad->set_tile_width(5);
    }
    return p;
  }

  // Forward and backward against plain loops over the documented formula,
  // with the masks the layer reports: y[m] = s x[m] (W . M_slice(m))^T + b,
  // slice(m) = the s with floor(s M / S) <= m < floor((s + 1) M / S).
  void CheckMatchesReference(bool weight_unit, bool bias) {
    const float ratio = 0.6;
    DropConnectInnerProductLayer<Dtype> layer(Param(weight_unit, bias, ratio));
    layer.SetUp(blob_bottom_vec_, blob_top_vec_);
    const int M = 3, K = 12, N = 13, S = slices_;
    const double s = 1.0 / (1.0 - ratio);
    for (int iter = 0; iter < 3; ++iter) {
      layer.Forward(blob_bottom_vec_, blob_top_vec_);
      ASSERT_TRUE(layer.masked());
      Blob<Dtype> dy_values(blob_top_->shape());
      Fill(&dy_values, -1, 1);
      caffe_copy(dy_values.count(), dy_values.cpu_data(),
                 blob_top_->mutable_cpu_diff());
      // Caffe accumulates parameter gradients: start from 0.25
      caffe_set(layer.blobs()[0]->count(), Dtype(0.25),
                layer.blobs()[0]->mutable_cpu_diff());
      if (bias) {
        caffe_set(N, Dtype(0.25), layer.blobs()[1]->mutable_cpu_diff());
      }
      layer.Backward(blob_top_vec_, std::vector<bool>(1, true),
                     blob_bottom_vec_);
      const Dtype* x = blob_bottom_->cpu_data();
      const Dtype* w = layer.blobs()[0]->cpu_data();
      const Dtype* y = blob_top_->cpu_data();
      const Dtype* dy = blob_top_->cpu_diff();
      std::vector<double> dw(N * K, 0.25), db(N, 0.25), dx(M * K, 0);
      int masked_out = 0;
      for (int m = 0; m < M; ++m) {
        int sl = 0;
        while (static_cast<int64_t>(sl + 1) * M / S <= m) ++sl;
        for (int j = 0; j < N; ++j) {
          double acc = bias ? layer.blobs()[1]->cpu_data()[j] : 0;
          db[j] += dy[m * N + j];
          for (int k = 0; k < K; ++k) {
            if (!layer.kept(sl, j, k)) {
              ++masked_out;
              continue;
            }
            acc += s * x[m * K + k] * w[j * K + k];
            dw[j * K + k] += s * dy[m * N + j] * x[m * K + k];
            dx[m * K + k] += s * dy[m * N + j] * w[j * K + k];
          }
          EXPECT_NEAR(y[m * N + j], acc, 1e-4) << "y " << m << "," << j;
        }
      }
      EXPECT_GT(masked_out, 0) << "no weight was dropped: nothing tested";
      for (int i = 0; i < N * K; ++i) {
        EXPECT_NEAR(layer.blobs()[0]->cpu_diff()[i], dw[i], 1e-4) << "dW " << i;
      }
      for (int j = 0; bias && j < N; ++j) {
        EXPECT_NEAR(layer.blobs()[1]->cpu_diff()[j], db[j], 1e-4) << "db " << j;
      }
      for (int i = 0; i < M * K; ++i) {
        EXPECT_NEAR(blob_bottom_->cpu_diff()[i], dx[i], 1e-4) << "dx " << i;
      }
    }
  }

  void CheckGradient(bool weight_unit, bool bias) {
    DropConnectInnerProductLayer<Dtype> layer(Param(weight_unit, bias, 0.5));
    // GradientChecker reseeds Caffe's RNG before every forward, so each
    // forward draws the same masks.
    GradientChecker<Dtype> checker(1e-2, 1e-3);
    checker.CheckGradientExhaustive(&layer, blob_bottom_vec_, blob_top_vec_);
  }

  // Over many TRAIN forwards: every mask unit (tile or weight) of every
  // slice is dropped with frequency within 3 sigma of p (below), and units
  // are independent: neighbouring tiles
  // and the same tile in neighbouring slices are both dropped with
  // frequency within 3 sigma of p^2.
  void CheckStatistics(bool weight_unit) {
    Caffe::set_random_seed(1234);
    const float ratio = 0.61;
    DropConnectInnerProductLayer<Dtype> layer(Param(weight_unit, false, ratio));
    layer.SetUp(blob_bottom_vec_, blob_top_vec_);
    const int N = 13, K = 12, S = slices_;
    const int th = weight_unit ? 1 : 4, tw = weight_unit ? 1 : 5;
    const int R = (N + th - 1) / th, C = (K + tw - 1) / tw;
    const int trials = 4000;
    std::vector<int> dropped(S * R * C, 0);
    int pairs = 0, both = 0, slice_pairs = 0, slice_both = 0;
    for (int t = 0; t < trials; ++t) {
      layer.Forward(blob_bottom_vec_, blob_top_vec_);
      for (int sl = 0; sl < S; ++sl) {
        for (int r = 0; r < R; ++r) {
          for (int c = 0; c < C; ++c) {
            const bool drop = !layer.kept(sl, r * th, c * tw);
            dropped[(sl * R + r) * C + c] += drop;
            if (c + 1 < C) {
              ++pairs;
              both += drop && !layer.kept(sl, r * th, (c + 1) * tw);
            }
            if (sl + 1 < S) {
              ++slice_pairs;
              slice_both += drop && !layer.kept(sl + 1, r * th, c * tw);
            }
          }
        }
      }
    }
    // Each unit within 3 sigma of p, up to the number of units that
    // independent units leave outside 3 sigma by chance (0.27 % of them, plus
    // 3 sigma of that count), and none beyond 5 sigma; their mean within 3
    // sigma of the mean's.
    const double sigma = std::sqrt(ratio * (1 - ratio) / trials);
    const double units = dropped.size();
    int outside = 0;
    double mean = 0;
    for (size_t u = 0; u < dropped.size(); ++u) {
      const double freq = static_cast<double>(dropped[u]) / trials;
      EXPECT_NEAR(freq, ratio, 5 * sigma) << "mask unit " << u;
      outside += std::fabs(freq - ratio) > 3 * sigma;
      mean += freq / units;
    }
    EXPECT_LE(outside, 0.0027 * units + 3 * std::sqrt(0.0027 * units))
        << outside << " of " << units << " mask units beyond 3 sigma of p";
    EXPECT_NEAR(mean, ratio, 3 * sigma / std::sqrt(units));
    const double p2 = ratio * ratio;
    // pairs are not independent of each other: 3 sigma of one pair's count
    EXPECT_NEAR(static_cast<double>(both) / pairs, p2,
                3 * std::sqrt(p2 * (1 - p2) / trials));
    if (S > 1) {
      EXPECT_NEAR(static_cast<double>(slice_both) / slice_pairs, p2,
                  3 * std::sqrt(p2 * (1 - p2) / trials));
    }
  }

  Blob<Dtype>* const blob_bottom_;
  Blob<Dtype>* const blob_top_;
  vector<Blob<Dtype>*> blob_bottom_vec_;
  vector<Blob<Dtype>*> blob_top_vec_;
  int slices_;
};

TYPED_TEST_CASE(DropConnectInnerProductLayerTest, TestDtypesAndDevices);

TYPED_TEST(DropConnectInnerProductLayerTest, TestTileMatchesReference) {
  this->CheckMatchesReference(false, true);
  this->CheckMatchesReference(false, false);
}

TYPED_TEST(DropConnectInnerProductLayerTest, TestWeightMatchesReference) {
  this->CheckMatchesReference(true, true);
}

// 2 uneven slices over 3 rows, and 4 slices (one empty).
TYPED_TEST(DropConnectInnerProductLayerTest, TestSlicesMatchReference) {
  this->slices_ = 2;
  this->CheckMatchesReference(false, true);
  this->CheckMatchesReference(true, false);
  this->slices_ = 4;
  this->CheckMatchesReference(false, true);
}

TYPED_TEST(DropConnectInnerProductLayerTest, TestGradientTile) {
  this->CheckGradient(false, true);
  this->slices_ = 2;
  this->CheckGradient(false, false);
}

TYPED_TEST(DropConnectInnerProductLayerTest, TestGradientWeight) {
  this->CheckGradient(true, true);
}

TYPED_TEST(DropConnectInnerProductLayerTest, TestStatisticsTile) {
  this->CheckStatistics(false);
  this->slices_ = 3;
  this->CheckStatistics(false);
}

TYPED_TEST(DropConnectInnerProductLayerTest, TestStatisticsWeight) {
  this->slices_ = 2;
  this->CheckStatistics(true);
}

// The tiles seen through the output alone: W = 1, no bias and one-hot
// inputs, so y[m, j] = s M(j, k_m). Rows 0 and 1 read inputs 5 and 9 (one
// 4 x 5 tile column), row 2 input 10 (the next): outputs of one tile row
// agree, rows 0 and 1 always agree, and row 2 and other tile rows differ
// from them in some forwards.
TYPED_TEST(DropConnectInnerProductLayerTest, TestTilesThroughTheOutput) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter p = this->Param(false, false, 0.5);
  DropConnectInnerProductLayer<Dtype> layer(p);
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  caffe_set(layer.blobs()[0]->count(), Dtype(1),
            layer.blobs()[0]->mutable_cpu_data());
  Dtype* x = this->blob_bottom_->mutable_cpu_data();
  caffe_set(this->blob_bottom_->count(), Dtype(0), x);
  x[0 * 12 + 5] = x[1 * 12 + 9] = x[2 * 12 + 10] = 1;
  int columns_differ = 0, rows_differ = 0;
  for (int t = 0; t < 50; ++t) {
    layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    const Dtype* y = this->blob_top_->cpu_data();
    for (int j = 0; j < 13; ++j) {
      for (int m = 0; m < 3; ++m) {
        EXPECT_TRUE(y[m * 13 + j] == 0 || y[m * 13 + j] == 2) << y[m * 13 + j];
        EXPECT_EQ(y[m * 13 + j], y[m * 13 + j / 4 * 4]) << "tile row of " << j;
      }
      EXPECT_EQ(y[j], y[13 + j]) << "inputs 5 and 9 share a tile";
      columns_differ += y[j] != y[26 + j];
      rows_differ += y[j] != y[(j + 4) % 13];
    }
  }
  EXPECT_GT(columns_differ, 0);
  EXPECT_GT(rows_differ, 0);
}

// TEST phase and dropout_ratio 0 compute InnerProduct.
TYPED_TEST(DropConnectInnerProductLayerTest, TestUnmaskedEqualsInnerProduct) {
  typedef typename TypeParam::Dtype Dtype;
  for (int c = 0; c < 2; ++c) {
    LayerParameter p = this->Param(false, true, c == 0 ? 0.7 : 0);
    if (c == 0) p.set_phase(TEST);
    DropConnectInnerProductLayer<Dtype> layer(p);
    layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    EXPECT_FALSE(layer.masked());
    LayerParameter ip_param = p;
    ip_param.clear_approx_dropout_param();
    ip_param.set_type("InnerProduct");
    InnerProductLayer<Dtype> ip(ip_param);
    Blob<Dtype> ip_top;
    vector<Blob<Dtype>*> ip_tops(1, &ip_top);
    ip.SetUp(this->blob_bottom_vec_, ip_tops);
    for (int i = 0; i < 2; ++i) ip.blobs()[i]->CopyFrom(*layer.blobs()[i]);
    ip.Forward(this->blob_bottom_vec_, ip_tops);
    ASSERT_EQ(ip_top.count(), this->blob_top_->count());
    for (int i = 0; i < ip_top.count(); ++i) {
      EXPECT_NEAR(this->blob_top_->cpu_data()[i], ip_top.cpu_data()[i], 1e-5);
    }
  }
}

// Bad parameters fail at setup, with messages naming layer and parameter.
class DropConnectInnerProductDeathTest : public ::testing::Test {
 protected:
  LayerParameter Base() {
    LayerParameter p;
    p.set_name("fc2");
    p.mutable_inner_product_param()->set_num_output(16);
    p.mutable_approx_dropout_param()->set_dropout_ratio(0.5);
    return p;
  }
  void ExpectSetupDeath(const LayerParameter& p, const std::string& message) {
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
    Blob<float> bottom(3, 12, 1, 1), top;
    vector<Blob<float>*> bottoms(1, &bottom), tops(1, &top);
    DropConnectInnerProductLayer<float> layer(p);
    EXPECT_DEATH(layer.SetUp(bottoms, tops), message);
  }
};

TEST_F(DropConnectInnerProductDeathTest, RateOne) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_dropout_ratio(1);
  ExpectSetupDeath(p, "Layer fc2: approx_dropout_param.dropout_ratio must be "
                      "in \\[0, 1\\), got 1");
}

TEST_F(DropConnectInnerProductDeathTest, RegularPatternFields) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_pattern(
      ApproxDropoutParameter_Pattern_TILE);
  ExpectSetupDeath(p, "Layer fc2: approx_dropout_param.pattern, side, .* "
                      "set regular patterns");
}

TEST_F(DropConnectInnerProductDeathTest, TileSizeWithWeightUnit) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_drop_connect_unit(
      ApproxDropoutParameter_DropConnectUnit_DROP_CONNECT_WEIGHT);
  p.mutable_approx_dropout_param()->set_tile_width(4);
  ExpectSetupDeath(p, "tile_height and tile_width apply to drop_connect_unit: "
                      "DROP_CONNECT_TILE only");
}

TEST_F(DropConnectInnerProductDeathTest, TileWiderThanInput) {
  LayerParameter p = Base();
  p.mutable_inner_product_param()->set_num_output(64);
  ExpectSetupDeath(p, "Layer fc2: approx_dropout_param.tile_width \\(32\\) is "
                      "larger than the weight matrix's input size K \\(12\\)");
}

TEST_F(DropConnectInnerProductDeathTest, ZeroSlices) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_tile_width(4);
  p.mutable_approx_dropout_param()->set_tile_height(4);
  p.mutable_approx_dropout_param()->set_batch_slices(0);
  ExpectSetupDeath(p, "batch_slices must be >= 1");
}

}  // namespace caffe
