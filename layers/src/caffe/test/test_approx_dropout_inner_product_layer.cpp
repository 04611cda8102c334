#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/approx_dropout_inner_product_layer.hpp"
#include "caffe/util/approx_dropout_param.hpp"
#include "caffe/layers/inner_product_layer.hpp"
#include "caffe/net.hpp"
#include "caffe/util/math_functions.hpp"

#include "caffe/test/approx_dropout_test_util.hpp"
#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

enum Mode { ROW_OUTPUT, ROW_INPUT, TILE };

// Plain loops over the formulas of the layer's documentation, with an
// explicit mask: mask(m, j, k) = 1 iff weight (j, k) takes part in row m.
struct Reference {
  int M, K, N, th, tw;
  Mode mode;
  int dp, b;
  double s;
  int S;          // batch slices
  int tile_order;  // TILE: ApproxDropoutParameter::TileOrder's number
  bool block;     // ROW layout BLOCK (else STRIDED)
  // Propagation: inputs kept by a producer's pattern (in_dp, in_b) in its
  // layout; in_dp = 0 means no pattern bottom.
  int in_dp, in_b;
  bool in_block;
  // Row m lies in slice sl = the one with floor(sl M / S) <= m, which uses
  // offset (b + sl) % dp.
  int slice(int m) const {
    int sl = 0;
    while (static_cast<int64_t>(sl + 1) * M / S <= m) ++sl;
    return sl;
  }
  int row_b(int m) const { return (b + slice(m)) % dp; }
  // Unit u of U kept by (p, bm): STRIDED u % p == bm; BLOCK u in block bm
  // of p blocks [floor(i U / p), floor((i + 1) U / p)).
  static bool kept(int u, int U, int p, int bm, bool in_blocks) {
    if (!in_blocks) return u % p == bm;
    return static_cast<int64_t>(bm) * U / p <= u &&
           u < static_cast<int64_t>(bm + 1) * U / p;
  }
  bool tile_kept(int r, int c, int bm) const {
    const int R = (N + th - 1) / th, C = (K + tw - 1) / tw;
    switch (tile_order) {
      case ApproxDropoutParameter_TileOrder_ROW_MAJOR:
        return (r * C + c) % dp == bm;
      case ApproxDropoutParameter_TileOrder_DIAGONAL:
        return (r + c) % dp == bm;
      default: {  // BLOCKS: block i of the tile rows, g of the tile columns
        int i = 0, g = 0;
        while (static_cast<int64_t>(i + 1) * R / dp <= r) ++i;
        while (static_cast<int64_t>(g + 1) * C / dp <= c) ++g;
        return (i + g) % dp == bm;
      }
    }
  }
  bool mask(int m, int j, int k) const {
    const int bm = row_b(m);
    if (in_dp > 0 &&
        !kept(k, K, in_dp, (in_b + slice(m)) % in_dp, in_block)) {
      return false;
    }
    switch (mode) {
      case ROW_OUTPUT: return kept(j, N, dp, bm, block);
      case ROW_INPUT: return kept(k, K, dp, bm, block);
      default: return tile_kept(j / th, k / tw, bm);
    }
  }
  // multiplier of bias[j] in y[m, j]
  double bias_gate(int m, int j) const {
    return mode == ROW_OUTPUT ? (kept(j, N, dp, row_b(m), block) ? s : 0) : 1;
  }
  template <typename Dtype>
  void Forward(const Dtype* x, const Dtype* w, const Dtype* bias,
               std::vector<double>* y) const {
    y->assign(M * N, 0);
    for (int m = 0; m < M; ++m) {
      for (int j = 0; j < N; ++j) {
        double acc = 0;
        for (int k = 0; k < K; ++k) {
          if (mask(m, j, k)) acc += x[m * K + k] * w[j * K + k];
        }
        (*y)[m * N + j] = s * acc + (bias ? bias_gate(m, j) * bias[j] : 0);
      }
    }
  }
  template <typename Dtype>
  void Backward(const Dtype* x, const Dtype* w, const Dtype* dy,
                std::vector<double>* dw, std::vector<double>* db,
                std::vector<double>* dx) const {
    dw->assign(N * K, 0);
    db->assign(N, 0);
    dx->assign(M * K, 0);
    for (int m = 0; m < M; ++m) {
      for (int j = 0; j < N; ++j) {
        const double g = dy[m * N + j];
        (*db)[j] += bias_gate(m, j) * g;
        for (int k = 0; k < K; ++k) {
          if (!mask(m, j, k)) continue;
          (*dw)[j * K + k] += s * g * x[m * K + k];
          (*dx)[m * K + k] += s * g * w[j * K + k];
        }
      }
    }
  }
};

template <typename TypeParam>
class ApproxDropoutInnerProductLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  ApproxDropoutInnerProductLayerTest()
      : blob_bottom_(new Blob<Dtype>(3, 2, 3, 2)),  // M = 3, K = 12
        blob_top_(new Blob<Dtype>()), blob_pattern_(new Blob<Dtype>()),
        num_output_(13), slices_(4), tile_order_(1), block_(false),
        in_dp_(0), in_b_(0), in_block_(false) {
    FillBottom();
    blob_bottom_vec_.push_back(blob_bottom_);
    blob_top_vec_.push_back(blob_top_);
  }
  virtual ~ApproxDropoutInnerProductLayerTest() {
    delete blob_bottom_;
    delete blob_top_;
    delete blob_pattern_;
  }

  void FillBottom() {
    FillerParameter filler_param;
    filler_param.set_min(-1);
    filler_param.set_max(1);
    UniformFiller<Dtype> filler(filler_param);
    filler.Fill(blob_bottom_);
  }

  // A 1030 x 1025 layer: its copies are large enough to run on several
  // threads (the small shapes stay on one).
  void UseLargeShapes() {
    blob_bottom_->Reshape(2, 1025, 1, 1);
    FillBottom();
    num_output_ = 1030;
  }

  // num_output 13 and K = 12 with 4 x 5 tiles: neither is a multiple of the
  // tile, so edge tiles are short in both directions.
  LayerParameter Param(Mode mode, bool bias, float ratio = 0.5) {
    LayerParameter p;
    p.set_name("fc");
    p.set_type("ApproxDropoutInnerProduct");
    InnerProductParameter* ip = p.mutable_inner_product_param();
    ip->set_num_output(num_output_);
    ip->set_bias_term(bias);
    ip->mutable_weight_filler()->set_type("uniform");
    ip->mutable_weight_filler()->set_min(-1);
    ip->mutable_weight_filler()->set_max(1);
    ip->mutable_bias_filler()->set_type("uniform");
    ip->mutable_bias_filler()->set_min(1);
    ip->mutable_bias_filler()->set_max(2);
    ApproxDropoutParameter* ad = p.mutable_approx_dropout_param();
    ad->set_dropout_ratio(ratio);
    ad->set_pattern(mode == TILE ? ApproxDropoutParameter_Pattern_TILE
                                 : ApproxDropoutParameter_Pattern_ROW);
    ad->set_side(mode == ROW_INPUT ? ApproxDropoutParameter_Side_INPUT
                                   : ApproxDropoutParameter_Side_OUTPUT);
    ad->set_tile_height(4);
    ad->set_tile_width(5);
    ad->set_batch_slices(slices_);
    if (mode == TILE) {
      ad->set_tile_order(
          static_cast<ApproxDropoutParameter_TileOrder>(tile_order_));
    } else {
      ad->set_layout(block_ ? ApproxDropoutParameter_Layout_BLOCK
                            : ApproxDropoutParameter_Layout_STRIDED);
    }
    return p;
  }

  Reference Ref(Mode mode, int dp, int b, double scale) {
    const int M = blob_bottom_->num(), K = blob_bottom_->count(1);
    Reference r = {M, K, num_output_, 4, 5, mode, dp, b, scale, slices_,
                   tile_order_, block_, in_dp_, in_b_, in_block_};
    return r;
  }

  // With in_dp_ > 0: a producer (ROW_OUTPUT, num_output = this layer's K,
  // fixed pattern (in_dp_, in_b_), layout in_block_) whose pattern top
  // becomes the second bottom of the layer under test.
  shared_ptr<Layer<Dtype> > MakeProducer(vector<Blob<Dtype>*>* bottoms) {
    *bottoms = blob_bottom_vec_;
    if (in_dp_ == 0) return shared_ptr<Layer<Dtype> >();
    producer_in_.Reshape(blob_bottom_->num(), 3, 1, 1);
    LayerParameter p = Param(ROW_OUTPUT, true, 0.5);
    p.set_name("producer");
    p.set_phase(TRAIN);
    p.mutable_inner_product_param()->set_num_output(blob_bottom_->count(1));
    p.mutable_approx_dropout_param()->set_layout(in_block_
        ? ApproxDropoutParameter_Layout_BLOCK
        : ApproxDropoutParameter_Layout_STRIDED);
    shared_ptr<ApproxDropoutInnerProductLayer<Dtype> > producer(
        new ApproxDropoutInnerProductLayer<Dtype>(p));
    vector<Blob<Dtype>*> in(1, &producer_in_), out;
    out.push_back(&producer_out_);
    out.push_back(&producer_pattern_);
    producer->SetUp(in, out);
    producer->FixPattern(in_dp_, in_b_);
    producer->Forward(in, out);
    bottoms->push_back(&producer_pattern_);
    return producer;
  }

  // Forward and backward for a fixed pattern against the reference.
  void CheckFixedPattern(Mode mode, bool bias, int dp, int b) {
    LayerParameter p = Param(mode, bias, 0.5);
    p.set_phase(TRAIN);
    vector<Blob<Dtype>*> bottoms;
    shared_ptr<Layer<Dtype> > producer = MakeProducer(&bottoms);
    ApproxDropoutInnerProductLayer<Dtype> layer(p);
    layer.SetUp(bottoms, blob_top_vec_);
    layer.FixPattern(dp, b);
    layer.Forward(bottoms, blob_top_vec_);
    const Reference ref = Ref(mode, dp, b, 2.0);
    const Dtype* bias_data = bias ? layer.blobs()[1]->cpu_data() : NULL;
    std::vector<double> y;
    ref.Forward(blob_bottom_->cpu_data(), layer.blobs()[0]->cpu_data(),
                bias_data, &y);
    const Dtype tol = sizeof(Dtype) == 4 ? 2e-4 : 1e-10;
    ASSERT_EQ(blob_top_->count(), ref.M * ref.N);
    for (int i = 0; i < blob_top_->count(); ++i) {
      EXPECT_NEAR(blob_top_->cpu_data()[i], y[i], tol) << "y[" << i << "]";
    }
    // backward with a random top diff, accumulating onto non-zero diffs
    FillerParameter filler_param;
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(blob_top_);
    caffe_copy(blob_top_->count(), blob_top_->cpu_data(),
               blob_top_->mutable_cpu_diff());
    for (size_t i = 0; i < layer.blobs().size(); ++i) {
      caffe_set(layer.blobs()[i]->count(), Dtype(0.25),
                layer.blobs()[i]->mutable_cpu_diff());
    }
    layer.Backward(blob_top_vec_, vector<bool>(bottoms.size(), true), bottoms);
    std::vector<double> dw, db, dx;
    ref.Backward(blob_bottom_->cpu_data(), layer.blobs()[0]->cpu_data(),
                 blob_top_->cpu_diff(), &dw, &db, &dx);
    for (int i = 0; i < ref.N * ref.K; ++i) {
      EXPECT_NEAR(layer.blobs()[0]->cpu_diff()[i], 0.25 + dw[i], tol)
          << "dW[" << i << "]";
    }
    if (bias) {
      for (int j = 0; j < ref.N; ++j) {
        EXPECT_NEAR(layer.blobs()[1]->cpu_diff()[j], 0.25 + db[j], tol)
            << "db[" << j << "]";
      }
    }
    for (int i = 0; i < ref.M * ref.K; ++i) {
      EXPECT_NEAR(blob_bottom_->cpu_diff()[i], dx[i], tol) << "dx[" << i << "]";
    }
  }

  void CheckGradient(Mode mode, bool bias, int dp, int b) {
    LayerParameter p = Param(mode, bias);
    p.set_phase(TRAIN);
    vector<Blob<Dtype>*> bottoms;
    shared_ptr<Layer<Dtype> > producer = MakeProducer(&bottoms);
    ApproxDropoutInnerProductLayer<Dtype> layer(p);
    layer.SetUp(bottoms, blob_top_vec_);
    layer.FixPattern(dp, b);
    GradientChecker<Dtype> checker(1e-2, 1e-3);
    // Bottom 0 only: the pattern bottom holds integers, not an input.
    checker.CheckGradientExhaustive(&layer, bottoms, blob_top_vec_, 0);
  }

  // Over many TRAIN iterations: in every slice, each output neuron (ROW) or
  // tile (TILE) is dropped with frequency within 3 sigma of p, the sampled dp
  // follow the distribution (chi-squared), and every output matches the
  // reference for the patterns the second top reports. An empty k uses the
  // layer's default distribution for `ratio`.
  void CheckStatistics(Mode mode, std::vector<double> k, float ratio) {
    Caffe::set_random_seed(1234);
    LayerParameter p = Param(mode, false, ratio);
    const bool default_k = k.empty();
    for (double v : k) {
      p.mutable_approx_dropout_param()->add_pattern_distribution(v);
    }
    p.set_phase(TRAIN);
    vector<Blob<Dtype>*> tops(blob_top_vec_);
    tops.push_back(blob_pattern_);
    ApproxDropoutInnerProductLayer<Dtype> layer(p);
    layer.SetUp(blob_bottom_vec_, tops);
    if (default_k) k = layer.sampler().distribution();
    const int max_dp = k.size();
    ASSERT_EQ(blob_pattern_->num_axes(), 2);
    ASSERT_EQ(blob_pattern_->shape(0), slices_);
    ASSERT_EQ(blob_pattern_->shape(1), 4);
    const double rate = PatternDropoutRate(k);
    EXPECT_NEAR(rate, ratio, default_k ? 1e-6 : 0.01);
    const double s = 1.0 / (1.0 - ratio);
    const int trials = 10000, units = mode == TILE ? 4 * 3 : 13;
    std::vector<int> dropped(units * slices_, 0), dp_count(max_dp, 0);
    for (int t = 0; t < trials; ++t) {
      layer.Forward(blob_bottom_vec_, tops);
      const Dtype* observed = blob_pattern_->cpu_data();
      const int dp = static_cast<int>(observed[0]);
      const int b = static_cast<int>(observed[1]);
      ASSERT_GE(dp, 1);
      ASSERT_LE(dp, max_dp);
      ASSERT_GT(k[dp - 1], 0) << "sampled a dp of probability 0";
      ASSERT_EQ(dp, layer.pattern().dp);
      ASSERT_EQ(b, layer.pattern().b);
      ++dp_count[dp - 1];
      for (int sl = 0; sl < slices_; ++sl) {
        ASSERT_EQ(observed[4 * sl], dp);
        const int bs = static_cast<int>(observed[4 * sl + 1]);
        ASSERT_EQ(bs, (b + sl) % dp) << "slice " << sl;
        for (int u = 0; u < units; ++u) {
          const bool kept = mode == TILE
              ? Ref(mode, dp, b, s).tile_kept(u / 3, u % 3, bs)
              : u % dp == bs;
          dropped[sl * units + u] += !kept;
        }
      }
      if (t % 500 == 0) {  // the output really follows the reported pattern
        std::vector<double> y;
        Ref(mode, dp, b, s).Forward(blob_bottom_->cpu_data(),
            layer.blobs()[0]->cpu_data(), static_cast<const Dtype*>(NULL), &y);
        for (int i = 0; i < blob_top_->count(); ++i) {
          ASSERT_NEAR(blob_top_->cpu_data()[i], y[i], 1e-3) << t << " " << i;
        }
      }
    }
    ExpectPatternStatistics(dropped, dp_count, k, trials, rate);
  }

  Blob<Dtype>* const blob_bottom_;
  Blob<Dtype>* const blob_top_;
  Blob<Dtype>* const blob_pattern_;
  int num_output_;
  int slices_;     // batch_slices of Param() and Ref()
  int tile_order_;  // TILE: tile_order of Param() and Ref()
  bool block_;     // ROW layout of Param() and Ref()
  int in_dp_, in_b_;  // > 0: a producer's pattern bottom (MakeProducer)
  bool in_block_;
  Blob<Dtype> producer_in_, producer_out_, producer_pattern_;
  vector<Blob<Dtype>*> blob_bottom_vec_;
  vector<Blob<Dtype>*> blob_top_vec_;
};

TYPED_TEST_CASE(ApproxDropoutInnerProductLayerTest, TestDtypesAndDevices);

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestSetUp) {
  typedef typename TypeParam::Dtype Dtype;
  ApproxDropoutInnerProductLayer<Dtype> layer(this->Param(TILE, true));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_EQ(this->blob_top_->num(), 3);
  EXPECT_EQ(this->blob_top_->channels(), 13);
  ASSERT_EQ(layer.blobs().size(), 2);
  EXPECT_EQ(layer.blobs()[0]->shape(0), 13);
  EXPECT_EQ(layer.blobs()[0]->shape(1), 12);
  EXPECT_EQ(layer.blobs()[1]->count(), 13);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestRowOutputMatchesMask) {
  this->CheckFixedPattern(ROW_OUTPUT, true, 3, 1);
  this->CheckFixedPattern(ROW_OUTPUT, false, 4, 3);
  this->CheckFixedPattern(ROW_OUTPUT, true, 1, 0);
  this->CheckFixedPattern(ROW_OUTPUT, true, 13, 12);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestRowInputMatchesMask) {
  this->CheckFixedPattern(ROW_INPUT, true, 3, 2);
  this->CheckFixedPattern(ROW_INPUT, false, 5, 0);
  this->CheckFixedPattern(ROW_INPUT, true, 12, 11);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestTileMatchesMask) {
  // 4 x 3 tiles with short edge tiles; dp 2 and 4 divide the 3 tile columns
  // unevenly, dp 3 evenly; dp > 6 leaves some diagonals without tiles, and
  // dp > 3 some column blocks (BLOCKS, order 2) empty
  for (int order = 0; order < 3; ++order) {
    this->tile_order_ = order;
    for (int dp = 1; dp <= 12; ++dp) {
      for (int b = 0; b < dp; b += std::max(1, dp / 3)) {
        this->CheckFixedPattern(TILE, dp % 2 == 0, dp, b);
      }
    }
  }
}

// S = 1 (the paper's), uneven slices (M = 3, S = 2), S = M, and S > M with
// empty slices; slices s and s + dp share a pattern when S > dp.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestSlicesMatchMask) {
  const int slices[] = {1, 2, 3, 5};
  for (int S : slices) {
    this->slices_ = S;
    for (int order = 0; order < 3; ++order) {
      this->tile_order_ = order;
      this->CheckFixedPattern(TILE, true, 2, 1);
      this->CheckFixedPattern(TILE, false, 5, 3);
    }
    this->CheckFixedPattern(ROW_OUTPUT, true, 3, 2);
    this->CheckFixedPattern(ROW_OUTPUT, true, 2, 0);
    this->CheckFixedPattern(ROW_INPUT, true, 4, 1);
    this->CheckFixedPattern(ROW_INPUT, false, 1, 0);
  }
}

// A batch of 7 rows in 3 slices (2, 2, 3 rows), large enough shapes for the
// threaded copies.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestLargeSlicesMatchMask) {
  this->UseLargeShapes();
  this->blob_bottom_->Reshape(7, 1025, 1, 1);
  this->FillBottom();
  this->slices_ = 3;
  this->CheckFixedPattern(ROW_OUTPUT, true, 3, 1);
  this->CheckFixedPattern(ROW_INPUT, true, 2, 1);
  this->CheckFixedPattern(TILE, true, 4, 3);
  this->tile_order_ = 0;  // ROW_MAJOR
  this->CheckFixedPattern(TILE, false, 3, 0);
  this->tile_order_ = 2;  // BLOCKS
  this->CheckFixedPattern(TILE, true, 3, 2);
}

// The batch size may change between iterations, down to no rows at all.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestBatchSizeChanges) {
  typedef typename TypeParam::Dtype Dtype;
  const Mode modes[] = {ROW_OUTPUT, ROW_INPUT, TILE};
  for (Mode mode : modes) {
    this->blob_bottom_->Reshape(3, 2, 3, 2);
    this->FillBottom();
    LayerParameter p = this->Param(mode, true, 0.5);
    p.set_phase(TRAIN);
    ApproxDropoutInnerProductLayer<Dtype> layer(p);
    layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    layer.FixPattern(3, 1);
    const int batches[] = {5, 0, 2, 9};
    for (int M : batches) {
      this->blob_bottom_->Reshape(M, 2, 3, 2);
      if (M > 0) this->FillBottom();
      layer.Reshape(this->blob_bottom_vec_, this->blob_top_vec_);
      layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
      ASSERT_EQ(this->blob_top_->count(), M * 13);
      std::vector<double> y;
      this->Ref(mode, 3, 1, 2.0).Forward(this->blob_bottom_->cpu_data(),
          layer.blobs()[0]->cpu_data(), layer.blobs()[1]->cpu_data(), &y);
      for (int i = 0; i < this->blob_top_->count(); ++i) {
        EXPECT_NEAR(this->blob_top_->cpu_data()[i], y[i], 2e-4)
            << "M " << M << " y[" << i << "]";
      }
      caffe_set(this->blob_top_->count(), Dtype(1),
                this->blob_top_->mutable_cpu_diff());
      layer.Backward(this->blob_top_vec_, vector<bool>(1, true),
                     this->blob_bottom_vec_);
      for (int i = 0; i < layer.blobs()[0]->count(); ++i) {
        ASSERT_TRUE(std::isfinite(layer.blobs()[0]->cpu_diff()[i]));
      }
    }
  }
}

// propagate_down false leaves the bottom's diff alone; parameters whose
// param_propagate_down is off (lr_mult: 0) keep their diffs, the others
// still get theirs.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestPropagateDownOff) {
  typedef typename TypeParam::Dtype Dtype;
  const Mode modes[] = {ROW_OUTPUT, ROW_INPUT, TILE};
  for (Mode mode : modes) {
    for (int off = 0; off < 3; ++off) {  // 0: bottom, 1: weights, 2: bias
      LayerParameter p = this->Param(mode, true, 0.5);
      p.set_phase(TRAIN);
      ApproxDropoutInnerProductLayer<Dtype> layer(p);
      layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
      layer.FixPattern(2, 1);
      layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
      caffe_set(this->blob_top_->count(), Dtype(1),
                this->blob_top_->mutable_cpu_diff());
      caffe_set(this->blob_bottom_->count(), Dtype(7),
                this->blob_bottom_->mutable_cpu_diff());
      for (int i = 0; i < 2; ++i) {
        caffe_set(layer.blobs()[i]->count(), Dtype(7),
                  layer.blobs()[i]->mutable_cpu_diff());
      }
      if (off > 0) layer.set_param_propagate_down(off - 1, false);
      layer.Backward(this->blob_top_vec_, vector<bool>(1, off != 0),
                     this->blob_bottom_vec_);
      std::vector<double> dw, db, dx;
      const Reference ref = this->Ref(mode, 2, 1, 2.0);
      ref.Backward(this->blob_bottom_->cpu_data(),
                   layer.blobs()[0]->cpu_data(), this->blob_top_->cpu_diff(),
                   &dw, &db, &dx);
      for (int i = 0; i < this->blob_bottom_->count(); ++i) {
        EXPECT_NEAR(this->blob_bottom_->cpu_diff()[i], off == 0 ? 7 : dx[i],
                    2e-4) << "dx[" << i << "], off " << off;
      }
      for (int i = 0; i < layer.blobs()[0]->count(); ++i) {
        EXPECT_NEAR(layer.blobs()[0]->cpu_diff()[i],
                    off == 1 ? 7 : 7 + dw[i], 2e-4) << "dW[" << i << "]";
      }
      for (int j = 0; j < layer.blobs()[1]->count(); ++j) {
        EXPECT_NEAR(layer.blobs()[1]->cpu_diff()[j],
                    off == 2 ? 7 : 7 + db[j], 2e-4) << "db[" << j << "]";
      }
    }
  }
}

// The same random_seed gives the same patterns and outputs.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestSeedReproducible) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter p = this->Param(TILE, true, 0.7);
  p.set_phase(TRAIN);
  vector<Blob<Dtype>*> tops(this->blob_top_vec_);
  tops.push_back(this->blob_pattern_);
  std::vector<std::vector<Dtype> > runs(2);
  for (int run = 0; run < 2; ++run) {
    Caffe::set_random_seed(77);
    ApproxDropoutInnerProductLayer<Dtype> layer(p);
    layer.SetUp(this->blob_bottom_vec_, tops);
    for (int t = 0; t < 20; ++t) {
      layer.Forward(this->blob_bottom_vec_, tops);
      runs[run].insert(runs[run].end(), this->blob_pattern_->cpu_data(),
          this->blob_pattern_->cpu_data() + this->blob_pattern_->count());
      runs[run].insert(runs[run].end(), this->blob_top_->cpu_data(),
          this->blob_top_->cpu_data() + this->blob_top_->count());
    }
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) {
    ASSERT_EQ(runs[0][i], runs[1][i]) << "value " << i;
  }
}

// A layer that only skips (dropout_ratio 0) draws no random number, so that
// wiring one (the propagated classifier) leaves Caffe's random stream as it
// was; one that drops does draw.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestSkipOnlyLayerDrawsNothing) {
  typedef typename TypeParam::Dtype Dtype;
  for (float ratio : {0.f, 0.5f}) {
    ApproxDropoutInnerProductLayer<Dtype> layer(
        this->Param(ROW_OUTPUT, true, ratio));
    layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    Caffe::set_random_seed(77);
    const unsigned int first = caffe_rng_rand();
    Caffe::set_random_seed(77);
    layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    const unsigned int next = caffe_rng_rand();
    if (ratio == 0) {
      EXPECT_EQ(next, first) << "a skip-only layer drew random numbers";
      EXPECT_EQ(layer.pattern().dp, 1);
    } else {
      EXPECT_NE(next, first) << "a dropping layer drew nothing";
    }
  }
}

// TEST phase: the second top (S x 4) reports dp = 1, b = 0 for every slice,
// with the layout code and the unit count.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestPatternTopInTestPhase) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter p = this->Param(ROW_OUTPUT, true, 0.7);
  p.set_phase(TEST);
  vector<Blob<Dtype>*> tops(this->blob_top_vec_);
  tops.push_back(this->blob_pattern_);
  ApproxDropoutInnerProductLayer<Dtype> layer(p);
  layer.SetUp(this->blob_bottom_vec_, tops);
  layer.Forward(this->blob_bottom_vec_, tops);
  ASSERT_EQ(this->blob_pattern_->shape(0), 4);
  ASSERT_EQ(this->blob_pattern_->shape(1), 4);
  for (int sl = 0; sl < 4; ++sl) {
    const Dtype* row = this->blob_pattern_->cpu_data() + 4 * sl;
    EXPECT_EQ(row[0], 1);
    EXPECT_EQ(row[1], 0);
    EXPECT_EQ(row[2], ApproxDropoutParameter_Layout_STRIDED);
    EXPECT_EQ(row[3], 13);
  }
}

// batch_slices unset (DefaultBatchSlices): ROW dropping outputs takes 1
// slice up to p = 0.5 and 2 above; ROW on the input side 2; TILE 4 in the
// BLOCKS order, else 1.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestDefaultSlices) {
  typedef typename TypeParam::Dtype Dtype;
  // order: TILE's tile_order, -1 unset (DIAGONAL)
  struct Case { Mode mode; float ratio; int want; int order; };
  const Case cases[] = {{ROW_OUTPUT, 0.5, 1, 0}, {ROW_OUTPUT, 0.3, 1, 0},
                        {ROW_OUTPUT, 0.0, 1, 0}, {ROW_OUTPUT, 0.51, 2, 0},
                        {ROW_OUTPUT, 0.7, 2, 0}, {ROW_INPUT, 0.5, 2, 0},
                        {ROW_INPUT, 0.3, 2, 0}, {TILE, 0.5, 1, 1},
                        {TILE, 0.7, 1, 0}, {TILE, 0.7, 1, -1},
                        {TILE, 0.3, 4, 2}};
  vector<Blob<Dtype>*> tops(this->blob_top_vec_);
  tops.push_back(this->blob_pattern_);
  for (const Case& c : cases) {
    LayerParameter p = this->Param(c.mode, true, c.ratio);
    p.mutable_approx_dropout_param()->clear_batch_slices();
    p.mutable_approx_dropout_param()->clear_pattern_distribution();
    if (c.mode == TILE && c.order < 0) {
      p.mutable_approx_dropout_param()->clear_tile_order();
    } else if (c.mode == TILE) {
      p.mutable_approx_dropout_param()->set_tile_order(
          static_cast<ApproxDropoutParameter_TileOrder>(c.order));
    }
    p.set_phase(TRAIN);
    ApproxDropoutInnerProductLayer<Dtype> layer(p);
    layer.SetUp(this->blob_bottom_vec_, tops);
    layer.Forward(this->blob_bottom_vec_, tops);
    EXPECT_EQ(this->blob_pattern_->shape(0), c.want)
        << "mode " << c.mode << ", p " << c.ratio;
    EXPECT_EQ(layer.slice_patterns().size(), c.want)
        << "mode " << c.mode << ", p " << c.ratio;
    EXPECT_EQ(DefaultBatchSlices(p.approx_dropout_param()), c.want);
  }
}

// Two layers sharing W and bias through param { name }: their gradients add
// up in the shared diffs (loss = sum of both outputs, so dy = 1).
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestSharedWeightsAccumulate) {
  typedef typename TypeParam::Dtype Dtype;
  const char* modes[] = {"pattern: ROW layout: STRIDED",
                         "pattern: ROW side: INPUT layout: STRIDED",
                         "pattern: TILE tile_height: 4 tile_width: 5"};
  const Mode mode_ids[] = {ROW_OUTPUT, ROW_INPUT, TILE};
  for (int m = 0; m < 3; ++m) {
    std::string layer_text =
        "  type: 'ApproxDropoutInnerProduct' bottom: 'data' "
        "  param { name: 'w' } param { name: 'bias' } "
        "  loss_weight: 1 loss_weight: 0 "
        "  inner_product_param { num_output: 13 "
        "    weight_filler { type: 'uniform' min: -1 max: 1 } "
        "    bias_filler { type: 'uniform' min: 1 max: 2 } } "
        "  approx_dropout_param { dropout_ratio: 0.5 batch_slices: 4 "
        + std::string(modes[m]) + " } }";
    const std::string net_text =
        "name: 'shared' state { phase: TRAIN } "
        "layer { name: 'data' type: 'Input' top: 'data' "
        "  input_param { shape { dim: 3 dim: 12 } } } "
        "layer { name: 'fa' top: 'ya' top: 'pa' " + layer_text +
        "layer { name: 'fb' top: 'yb' top: 'pb' " + layer_text;
    NetParameter net_param;
    CHECK(google::protobuf::TextFormat::ParseFromString(net_text, &net_param));
    Caffe::set_random_seed(5 + m);
    Net<Dtype> net(net_param);
    Blob<Dtype>* data = net.blob_by_name("data").get();
    caffe_copy(data->count(), this->blob_bottom_->cpu_data(),
               data->mutable_cpu_data());
    ASSERT_EQ(net.learnable_params().size(), 2) << "W and bias are shared";
    net.ClearParamDiffs();
    net.ForwardBackward();
    std::vector<double> dw_sum(13 * 12, 0), db_sum(13, 0);
    const char* patterns[] = {"pa", "pb"};
    const std::vector<Dtype> ones(3 * 13, Dtype(1));
    for (const char* name : patterns) {
      const Dtype* pat = net.blob_by_name(name)->cpu_data();
      Reference ref = this->Ref(mode_ids[m], static_cast<int>(pat[0]),
                                static_cast<int>(pat[1]), 2.0);
      std::vector<double> dw, db, dx;
      ref.Backward(data->cpu_data(), net.learnable_params()[0]->cpu_data(),
                   &ones[0], &dw, &db, &dx);
      for (size_t i = 0; i < dw.size(); ++i) dw_sum[i] += dw[i];
      for (size_t j = 0; j < db.size(); ++j) db_sum[j] += db[j];
    }
    for (size_t i = 0; i < dw_sum.size(); ++i) {
      EXPECT_NEAR(net.learnable_params()[0]->cpu_diff()[i], dw_sum[i], 2e-4)
          << modes[m] << " dW[" << i << "]";
    }
    for (size_t j = 0; j < db_sum.size(); ++j) {
      EXPECT_NEAR(net.learnable_params()[1]->cpu_diff()[j], db_sum[j], 2e-4)
          << modes[m] << " db[" << j << "]";
    }
  }
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestLargeMatchesMask) {
  this->UseLargeShapes();
  this->CheckFixedPattern(ROW_INPUT, true, 2, 1);
  this->CheckFixedPattern(TILE, true, 2, 0);
  this->CheckFixedPattern(TILE, false, 3, 2);
  this->CheckFixedPattern(ROW_OUTPUT, true, 2, 1);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestGradientRowOutput) {
  this->CheckGradient(ROW_OUTPUT, true, 3, 1);
  this->CheckGradient(ROW_OUTPUT, false, 2, 0);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestGradientRowInput) {
  this->CheckGradient(ROW_INPUT, true, 3, 0);
  this->CheckGradient(ROW_INPUT, false, 2, 1);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestGradientTile) {
  this->CheckGradient(TILE, true, 2, 1);
  this->CheckGradient(TILE, false, 5, 3);
  this->tile_order_ = 0;  // ROW_MAJOR
  this->CheckGradient(TILE, true, 3, 2);
  this->tile_order_ = 2;  // BLOCKS
  this->CheckGradient(TILE, true, 3, 2);
  this->CheckGradient(TILE, false, 2, 0);
}

// The checks above run 4 slices over 3 rows; here 2 uneven slices.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestGradientTwoSlices) {
  this->slices_ = 2;
  this->CheckGradient(ROW_OUTPUT, true, 3, 2);
  this->CheckGradient(ROW_INPUT, true, 2, 1);
  this->CheckGradient(TILE, true, 3, 1);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestPhaseEqualsInnerProduct) {
  typedef typename TypeParam::Dtype Dtype;
  const Mode modes[] = {ROW_OUTPUT, ROW_INPUT, TILE};
  for (Mode mode : modes) {
    LayerParameter p = this->Param(mode, true, 0.7);
    p.set_phase(TEST);
    ApproxDropoutInnerProductLayer<Dtype> approx(p);
    approx.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    approx.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    LayerParameter ip_param;
    ip_param.set_phase(TEST);
    *ip_param.mutable_inner_product_param() = p.inner_product_param();
    InnerProductLayer<Dtype> ip(ip_param);
    Blob<Dtype> ip_top;
    vector<Blob<Dtype>*> ip_tops(1, &ip_top);
    ip.SetUp(this->blob_bottom_vec_, ip_tops);
    ip.blobs()[0]->CopyFrom(*approx.blobs()[0]);
    ip.blobs()[1]->CopyFrom(*approx.blobs()[1]);
    ip.Forward(this->blob_bottom_vec_, ip_tops);
    for (int i = 0; i < ip_top.count(); ++i) {
      EXPECT_NEAR(this->blob_top_->cpu_data()[i], ip_top.cpu_data()[i], 1e-5);
    }
  }
}

// BLOCK layout: every dp, every b, both sides; 13 outputs and 12 inputs
// split into uneven blocks for most dp; with 4 slices over 3 rows, 2 uneven
// slices and one pattern per batch.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestBlockMatchesMask) {
  this->block_ = true;
  const int slices[] = {4, 2, 1};
  for (int S : slices) {
    this->slices_ = S;
    for (int dp = 1; dp <= 12; ++dp) {
      for (int b = 0; b < dp; b += std::max(1, dp / 3)) {
        this->CheckFixedPattern(ROW_OUTPUT, dp % 2 == 0, dp, b);
        this->CheckFixedPattern(ROW_INPUT, dp % 2 == 1, dp, b);
      }
    }
  }
  this->CheckFixedPattern(ROW_OUTPUT, true, 13, 12);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestLargeBlockMatchesMask) {
  this->UseLargeShapes();
  this->block_ = true;
  this->CheckFixedPattern(ROW_OUTPUT, true, 3, 1);
  this->CheckFixedPattern(ROW_INPUT, true, 4, 3);
}

// layout unset: BLOCK.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestDefaultLayoutIsBlock) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter p = this->Param(ROW_OUTPUT, true, 0.5);
  p.mutable_approx_dropout_param()->clear_layout();
  p.set_phase(TRAIN);
  ApproxDropoutInnerProductLayer<Dtype> layer(p);
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.FixPattern(3, 1);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  this->block_ = true;
  std::vector<double> y;
  this->Ref(ROW_OUTPUT, 3, 1, 2.0).Forward(this->blob_bottom_->cpu_data(),
      layer.blobs()[0]->cpu_data(), layer.blobs()[1]->cpu_data(), &y);
  for (int i = 0; i < this->blob_top_->count(); ++i) {
    EXPECT_NEAR(this->blob_top_->cpu_data()[i], y[i], 2e-4) << "y[" << i << "]";
  }
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestGradientBlock) {
  this->block_ = true;
  this->CheckGradient(ROW_OUTPUT, true, 3, 1);
  this->CheckGradient(ROW_INPUT, true, 5, 4);
  this->slices_ = 2;
  this->CheckGradient(ROW_OUTPUT, false, 2, 1);
}

// A pattern bottom: only the inputs the producer kept (its own layout, slice
// by slice) take part; outputs are this layer's pattern, in either layout.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestPropagatedMatchesMask) {
  const int slices[] = {4, 2, 1};
  for (int S : slices) {
    this->slices_ = S;
    for (int layouts = 0; layouts < 4; ++layouts) {
      this->block_ = layouts & 1;
      this->in_block_ = layouts & 2;
      const int in_dps[] = {1, 2, 3, 5, 12};
      for (int in_dp : in_dps) {
        this->in_dp_ = in_dp;
        this->in_b_ = in_dp - 1;
        this->CheckFixedPattern(ROW_OUTPUT, true, 3, 1);
        this->CheckFixedPattern(ROW_OUTPUT, false, 1, 0);  // only skips
        this->CheckFixedPattern(ROW_OUTPUT, true, 4, 0);
      }
    }
  }
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestLargePropagatedMatchesMask) {
  this->UseLargeShapes();
  this->in_dp_ = 3;
  this->in_b_ = 2;
  this->CheckFixedPattern(ROW_OUTPUT, true, 2, 1);  // STRIDED: gathers
  this->block_ = this->in_block_ = true;
  this->CheckFixedPattern(ROW_OUTPUT, true, 3, 1);  // BLOCK: views only
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestGradientPropagated) {
  this->in_dp_ = 3;
  this->in_b_ = 1;
  this->CheckGradient(ROW_OUTPUT, true, 2, 1);
  this->block_ = this->in_block_ = true;
  this->CheckGradient(ROW_OUTPUT, true, 3, 2);
  this->slices_ = 2;
  this->CheckGradient(ROW_OUTPUT, false, 1, 0);
}

// The rule of propagation: a net whose layers take their producers' pattern
// bottoms computes what the same net without them computes (same seed:
// same patterns), loss, tops and every gradient, over several iterations,
// whatever the slice counts and phases of producer and consumer: both S = 3;
// the consumer's S unset (its own default, 1 at p = 0.5) or larger than the
// producer's; the consumer in the TEST phase (`phase: TEST`, dense) under a
// TRAIN producer whose 3 slices dropped different columns.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestWiredNetEqualsUnwired) {
  typedef typename TypeParam::Dtype Dtype;
  struct Case {
    const char *producer_slices, *consumer_slices, *consumer_phase;
  };
  const Case cases[] = {{"batch_slices: 3", "batch_slices: 3", ""},
                        {"batch_slices: 3", "", ""},
                        {"batch_slices: 2", "batch_slices: 3", ""},
                        {"batch_slices: 3", "", "phase: TEST"}};
  const char* layouts[] = {"STRIDED", "BLOCK"};
  for (const Case& c : cases) {
    for (const char* layout : layouts) {
      const std::string what = std::string(layout) + " producer " +
          c.producer_slices + ", consumer " + c.consumer_slices + " " +
          c.consumer_phase;
      std::vector<std::vector<Dtype> > values(2);
      for (int wired = 0; wired < 2; ++wired) {
        const std::string approx = std::string(" approx_dropout_param { "
            "dropout_ratio: 0.5 layout: ") + layout + " ";
        const std::string filler = " inner_product_param { num_output: %d "
            "weight_filler { type: 'uniform' min: -1 max: 1 } "
            "bias_filler { type: 'uniform' min: 0 max: 1 } } ";
        char fc1[256], fc2[256], fc3[256];
        snprintf(fc1, sizeof(fc1), filler.c_str(), 12);
        snprintf(fc2, sizeof(fc2), filler.c_str(), 9);
        snprintf(fc3, sizeof(fc3), filler.c_str(), 4);
        const std::string net_text = std::string(
            "name: 'mlp' force_backward: true state { phase: TRAIN } "
            "layer { name: 'data' type: 'Input' top: 'data' top: 'label' "
            "  input_param { shape { dim: 7 dim: 10 } shape { dim: 7 } } } "
            "layer { name: 'fc1' type: 'ApproxDropoutInnerProduct' "
            "  bottom: 'data' top: 'h1' top: 'p1' ") + fc1 + approx +
            c.producer_slices + " } } "
            "layer { name: 'r1' type: 'ReLU' bottom: 'h1' top: 'h1' } "
            "layer { name: 'fc2' type: 'ApproxDropoutInnerProduct' "
            "  bottom: 'h1' " + (wired ? "bottom: 'p1' " : "") +
            "  top: 'h2' top: 'p2' " + c.consumer_phase + fc2 + approx +
            c.consumer_slices + " } } "
            "layer { name: 'r2' type: 'ReLU' bottom: 'h2' top: 'h2' } "
            "layer { name: 'fc3' type: 'ApproxDropoutInnerProduct' "
            "  bottom: 'h2' " + (wired ? "bottom: 'p2' " : "") +
            "  top: 'fc3' " + fc3 +
            "  approx_dropout_param { dropout_ratio: 0 } } "
            "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc3' "
            "  bottom: 'label' top: 'loss' } ";
        NetParameter net_param;
        CHECK(google::protobuf::TextFormat::ParseFromString(net_text,
                                                            &net_param));
        Caffe::set_random_seed(31);
        Net<Dtype> net(net_param);
        Blob<Dtype>* data = net.blob_by_name("data").get();
        FillerParameter filler_param;
        filler_param.set_min(-1);
        filler_param.set_max(1);
        UniformFiller<Dtype>(filler_param).Fill(data);
        Dtype* label = net.blob_by_name("label")->mutable_cpu_data();
        for (int i = 0; i < 7; ++i) label[i] = i % 4;
        int dropped_both = 0;  // iterations where fc1 dropped (dp > 1), so
                               // that its slices dropped different columns
        for (int iter = 0; iter < 4; ++iter) {
          net.ClearParamDiffs();
          values[wired].push_back(net.ForwardBackward());
          const char* blobs[] = {"h1", "h2", "fc3", "p1", "p2"};
          for (const char* name : blobs) {
            const Blob<Dtype>& blob = *net.blob_by_name(name);
            values[wired].insert(values[wired].end(), blob.cpu_data(),
                                 blob.cpu_data() + blob.count());
          }
          values[wired].insert(values[wired].end(), data->cpu_diff(),
                               data->cpu_diff() + data->count());
          for (size_t i = 0; i < net.learnable_params().size(); ++i) {
            const Blob<Dtype>& param = *net.learnable_params()[i];
            values[wired].insert(values[wired].end(), param.cpu_diff(),
                                 param.cpu_diff() + param.count());
          }
          const Dtype* p1 = net.blob_by_name("p1")->cpu_data();
          dropped_both += p1[0] > 1;
        }
        // The case tests something only if fc1's slices differ.
        EXPECT_GT(dropped_both, 0) << what;
      }
      ASSERT_EQ(values[0].size(), values[1].size()) << what;
      for (size_t i = 0; i < values[0].size(); ++i) {
        EXPECT_NEAR(values[1][i], values[0][i],
                    1e-4 * std::max(Dtype(1), std::fabs(values[0][i])))
            << what << ": value " << i;
      }
    }
  }
}

const double kStatisticsK[] = {0.1, 0.2, 0.3, 0.2, 0.2};  // rate 0.61

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestStatisticsRow) {
  this->CheckStatistics(ROW_OUTPUT,
      std::vector<double>(kStatisticsK, kStatisticsK + 5), 0.61);
  this->slices_ = 1;  // the paper's one pattern per batch
  this->CheckStatistics(ROW_OUTPUT,
      std::vector<double>(kStatisticsK, kStatisticsK + 5), 0.61);
}

TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestStatisticsTile) {
  this->CheckStatistics(TILE,
      std::vector<double>(kStatisticsK, kStatisticsK + 5), 0.61);
  this->tile_order_ = 0;  // ROW_MAJOR
  this->slices_ = 2;
  this->CheckStatistics(TILE,
      std::vector<double>(kStatisticsK, kStatisticsK + 5), 0.61);
  this->tile_order_ = 2;  // BLOCKS
  this->slices_ = 3;
  this->CheckStatistics(TILE,
      std::vector<double>(kStatisticsK, kStatisticsK + 5), 0.61);
}

// No pattern_distribution: the built-in default for the ratio.
TYPED_TEST(ApproxDropoutInnerProductLayerTest, TestStatisticsDefault) {
  this->CheckStatistics(ROW_OUTPUT, std::vector<double>(), 0.7);
  this->CheckStatistics(TILE, std::vector<double>(), 0.3);
}

// Bad parameters fail at setup, with messages naming layer and parameter.
template <typename Dtype>
void ExpectSetupDeath(const LayerParameter& p, const std::string& message) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  Blob<Dtype> bottom(3, 12, 1, 1), top;
  vector<Blob<Dtype>*> bottoms(1, &bottom), tops(1, &top);
  ApproxDropoutInnerProductLayer<Dtype> layer(p);
  EXPECT_DEATH(layer.SetUp(bottoms, tops), message);
}

class ApproxDropoutInnerProductDeathTest : public ::testing::Test {
 protected:
  LayerParameter Base() {
    LayerParameter p;
    p.set_name("fc2");
    p.mutable_inner_product_param()->set_num_output(16);
    p.mutable_approx_dropout_param()->set_dropout_ratio(0.5);
    return p;
  }
};

TEST_F(ApproxDropoutInnerProductDeathTest, RateOne) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_dropout_ratio(1);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param.dropout_ratio "
                             "must be in \\[0, 1\\), got 1");
}

TEST_F(ApproxDropoutInnerProductDeathTest, DropConnectUnit) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_drop_connect_unit(
      ApproxDropoutParameter_DropConnectUnit_DROP_CONNECT_WEIGHT);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param."
                             "drop_connect_unit applies to "
                             "DropConnectInnerProduct only");
}

TEST_F(ApproxDropoutInnerProductDeathTest, NegativeDistribution) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->add_pattern_distribution(1.5);
  p.mutable_approx_dropout_param()->add_pattern_distribution(-0.5);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param.pattern_"
                             "distribution\\[1\\] \\(P\\(dp = 2\\)\\) is negative");
}

TEST_F(ApproxDropoutInnerProductDeathTest, NotNormalised) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->add_pattern_distribution(0.5);
  p.mutable_approx_dropout_param()->add_pattern_distribution(0.4);
  ExpectSetupDeath<float>(p, "pattern_distribution sums to 0.9, not 1");
}

TEST_F(ApproxDropoutInnerProductDeathTest, RateMismatch) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->add_pattern_distribution(0.5);
  p.mutable_approx_dropout_param()->add_pattern_distribution(0.0);
  p.mutable_approx_dropout_param()->add_pattern_distribution(0.5);
  ExpectSetupDeath<float>(p, "drops units with probability 0.333333, but "
                             "dropout_ratio is 0.5");
}

TEST_F(ApproxDropoutInnerProductDeathTest, TileLargerThanMatrix) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_pattern(
      ApproxDropoutParameter_Pattern_TILE);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param.tile_height "
                             "\\(32\\) is larger than the weight matrix's "
                             "num_output \\(16\\)");
  p.mutable_approx_dropout_param()->set_tile_height(4);
  ExpectSetupDeath<float>(p, "tile_width \\(32\\) is larger than the weight "
                             "matrix's input size K \\(12\\)");
}

TEST_F(ApproxDropoutInnerProductDeathTest, TileOnInputSide) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_pattern(
      ApproxDropoutParameter_Pattern_TILE);
  p.mutable_approx_dropout_param()->set_side(
      ApproxDropoutParameter_Side_INPUT);
  ExpectSetupDeath<float>(p, "side: INPUT applies to pattern: ROW only");
}

TEST_F(ApproxDropoutInnerProductDeathTest, ZeroSlices) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_batch_slices(0);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param.batch_slices "
                             "must be >= 1");
}

TEST_F(ApproxDropoutInnerProductDeathTest, TileOrderWithRow) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_tile_order(
      ApproxDropoutParameter_TileOrder_ROW_MAJOR);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param.tile_order "
                             "applies to pattern: TILE only");
}

TEST_F(ApproxDropoutInnerProductDeathTest, Transpose) {
  LayerParameter p = Base();
  p.mutable_inner_product_param()->set_transpose(true);
  ExpectSetupDeath<float>(p, "inner_product_param.transpose: true is not "
                             "supported by ApproxDropoutInnerProduct");
}

TEST_F(ApproxDropoutInnerProductDeathTest, DpBeyondUnits) {
  LayerParameter p = Base();  // ROW/OUTPUT over 16 outputs
  for (int i = 0; i < 16; ++i) {
    p.mutable_approx_dropout_param()->add_pattern_distribution(0);
  }
  p.mutable_approx_dropout_param()->add_pattern_distribution(1);  // dp = 17
  p.mutable_approx_dropout_param()->set_dropout_ratio(16.0 / 17);
  ExpectSetupDeath<float>(p, "gives dp = 17 probability 1, but the pattern "
                             "acts on only 16 units");
}

// Wiring errors name both layers; each net below is otherwise valid.
std::string WiringNet(const std::string& producer,
                      const std::string& consumer) {
  return "name: 'wiring' state { phase: TRAIN } "
      "layer { name: 'data' type: 'Input' top: 'data' "
      "  input_param { shape { dim: 4 dim: 10 } } } "
      "layer { name: 'fc1' type: 'ApproxDropoutInnerProduct' bottom: 'data' "
      "  top: 'h1' top: 'p1' inner_product_param { num_output: 12 } "
      "  approx_dropout_param { " + producer + " } } "
      "layer { name: 'r1' type: 'ReLU' bottom: 'h1' top: 'h1' } "
      "layer { name: 'fc2' type: 'ApproxDropoutInnerProduct' bottom: 'h1' "
      "  bottom: 'p1' top: 'h2' inner_product_param { num_output: 6 } "
      "  approx_dropout_param { " + consumer + " } } ";
}

void ExpectNetDeath(const std::string& net_text, const std::string& message,
                    bool at_forward = false) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  NetParameter param;
  CHECK(google::protobuf::TextFormat::ParseFromString(net_text, &param));
  if (at_forward) {
    EXPECT_DEATH({ Net<float> net(param); net.Forward(); }, message);
  } else {
    EXPECT_DEATH(Net<float> net(param), message);
  }
}

TEST_F(ApproxDropoutInnerProductDeathTest, WiringAccepted) {
  NetParameter param;
  // A second consumer of the same pattern reads it through a Split.
  CHECK(google::protobuf::TextFormat::ParseFromString(WiringNet(
      "dropout_ratio: 0.5", "dropout_ratio: 0") +
      "layer { name: 'fc2b' type: 'ApproxDropoutInnerProduct' bottom: 'h1' "
      "  bottom: 'p1' top: 'h2b' inner_product_param { num_output: 3 } "
      "  approx_dropout_param { dropout_ratio: 0.5 } } ", &param));
  Net<float> net(param);
  EXPECT_EQ(net.blob_by_name("h2")->count(1), 6);
  EXPECT_EQ(net.blob_by_name("h2b")->count(1), 3);
  net.Forward();
}

TEST_F(ApproxDropoutInnerProductDeathTest, PatternFromInputSide) {
  ExpectNetDeath(WiringNet("dropout_ratio: 0.5 side: INPUT",
                           "dropout_ratio: 0.5"),
      "Layer fc2 \\(pattern bottom 'p1' from layer fc1\\): fc1 does not "
      "drop its outputs");
}

TEST_F(ApproxDropoutInnerProductDeathTest, PatternFromTile) {
  ExpectNetDeath(WiringNet("dropout_ratio: 0.5 pattern: TILE tile_height: 4 "
                           "tile_width: 5", "dropout_ratio: 0.5"),
      "fc1 does not drop its outputs");
}

TEST_F(ApproxDropoutInnerProductDeathTest, PatternFromRateZero) {
  ExpectNetDeath(WiringNet("dropout_ratio: 0", "dropout_ratio: 0.5"),
      "fc1 does not drop its outputs");
}

TEST_F(ApproxDropoutInnerProductDeathTest, PatternUnitsDiffer) {
  std::string text = WiringNet("dropout_ratio: 0.5", "dropout_ratio: 0.5");
  // fc2 reads the data (K = 10) with fc1's pattern (12 units)
  const std::string from = "bottom: 'h1'   bottom: 'p1'";
  text.replace(text.find(from), from.size(), "bottom: 'data' bottom: 'p1'");
  ExpectNetDeath(text, "fc1 has 12 output units, but the input size K of "
                       "fc2 is 10");
}

// The pattern-top registry keys ownership by the layer, not its name: a
// producer that outlives the registration of a same-named layer on the same
// memory (a pycaffe reference to a layer of an earlier net) leaves the
// newer entry alone when it goes, so the consumer still finds its producer.
void ProducerOutlivedByNamesake() {
  LayerParameter producer;
  producer.set_name("fc1");
  producer.mutable_inner_product_param()->set_num_output(6);
  producer.mutable_approx_dropout_param()->set_dropout_ratio(0.5);
  producer.set_phase(TRAIN);
  Blob<float> x(4, 5, 1, 1), h1, p1, h2;
  vector<Blob<float>*> bottom(1, &x), tops;
  tops.push_back(&h1);
  tops.push_back(&p1);
  shared_ptr<ApproxDropoutInnerProductLayer<float> > old_layer(
      new ApproxDropoutInnerProductLayer<float>(producer));
  old_layer->SetUp(bottom, tops);
  ApproxDropoutInnerProductLayer<float> new_layer(producer);
  new_layer.SetUp(bottom, tops);  // same name, same pattern-top memory
  old_layer.reset();
  LayerParameter consumer;
  consumer.set_name("fc2");
  consumer.mutable_inner_product_param()->set_num_output(3);
  consumer.mutable_approx_dropout_param()->set_dropout_ratio(0.5);
  consumer.set_phase(TRAIN);
  ApproxDropoutInnerProductLayer<float> fc2(consumer);
  vector<Blob<float>*> consumer_top(1, &h2);
  fc2.SetUp(tops, consumer_top);
  new_layer.Forward(bottom, tops);
  fc2.Forward(tops, consumer_top);
  exit(0);
}

TEST_F(ApproxDropoutInnerProductDeathTest, PatternTopOwnedByLayer) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(ProducerOutlivedByNamesake(), ::testing::ExitedWithCode(0), "");
}

TEST_F(ApproxDropoutInnerProductDeathTest, PatternConsumerTile) {
  ExpectNetDeath(WiringNet("dropout_ratio: 0.5", "dropout_ratio: 0.5 "
                           "pattern: TILE tile_height: 2 tile_width: 4"),
      "needs approx_dropout_param.pattern: ROW with side: OUTPUT in fc2");
}

TEST_F(ApproxDropoutInnerProductDeathTest, NotAPatternTop) {
  std::string text = WiringNet("dropout_ratio: 0.5", "dropout_ratio: 0.5");
  text.replace(text.find("bottom: 'p1' top: 'h2'"), 12, "bottom: 'h1'");
  // (Caffe names the second reader's copy of h1 h1_r1_0_split_1)
  ExpectNetDeath(text, "Layer fc2: second bottom 'h1[a-z0-9_]*' is not a "
                       "pattern top");
}

// A blob shaped like a pattern top, but written by no producer: found out
// at the first forward (a Split's copy of a real one looks the same at
// setup).
TEST_F(ApproxDropoutInnerProductDeathTest, LookalikePatternTop) {
  std::string text = WiringNet("dropout_ratio: 0.5", "dropout_ratio: 0.5");
  text.replace(text.find("bottom: 'p1' top: 'h2'"), 12, "bottom: 'fake'");
  text += "layer { name: 'fake' type: 'Input' top: 'fake' "
          "  input_param { shape { dim: 2 dim: 4 } } } ";
  // Inputs come first in the net: move the new one to the front.
  text = "layer { name: 'fake' type: 'Input' top: 'fake' "
         "  input_param { shape { dim: 2 dim: 4 } } } " +
         text.substr(0, text.rfind("layer { name: 'fake'"));
  ExpectNetDeath(text, "Layer fc2: second bottom 'fake' is not a pattern top",
                 true);
}

TEST_F(ApproxDropoutInnerProductDeathTest, LayoutWithTile) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_pattern(
      ApproxDropoutParameter_Pattern_TILE);
  p.mutable_approx_dropout_param()->set_tile_width(4);
  p.mutable_approx_dropout_param()->set_tile_height(4);
  p.mutable_approx_dropout_param()->set_layout(
      ApproxDropoutParameter_Layout_BLOCK);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param.layout applies "
                             "to pattern: ROW only");
}

TEST_F(ApproxDropoutInnerProductDeathTest, RecurrentFieldsRefused) {
  LayerParameter p = Base();
  p.mutable_approx_dropout_param()->set_recurrent_dropout_ratio(0.5);
  ExpectSetupDeath<float>(p, "Layer fc2: approx_dropout_param.recurrent_"
                             "dropout_ratio, .* apply to ApproxDropoutLSTM "
                             "only");
}

}  // namespace caffe
