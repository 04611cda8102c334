#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/util/approx_dropout_pattern.hpp"
#include "caffe/util/approx_dropout_plan.hpp"

namespace caffe {

namespace {

// Unit u of U kept by (dp, b): STRIDED u % dp == b, BLOCK u in block b of
// dp blocks [floor(i U / dp), floor((i + 1) U / dp)).
bool KeptUnit(int u, int U, const DropoutPattern& p, bool block) {
  if (!block) return u % p.dp == p.b;
  return static_cast<int64_t>(p.b) * U / p.dp <= u &&
         u < static_cast<int64_t>(p.b + 1) * U / p.dp;
}

// Is weight (j, k) computed for the slice with pattern p (and input
// pattern q when propagated)? Written from the layer's documentation.
bool KeptWeight(const ApproxDropoutShape& s, const DropoutPattern& p,
                bool propagated, const DropoutPattern& q, bool q_block,
                int j, int k) {
  if (propagated && !KeptUnit(k, s.K, q, q_block)) return false;
  if (s.tile) {
    const int r = j / s.tile_height, c = k / s.tile_width;
    const int C = (s.K + s.tile_width - 1) / s.tile_width;
    if (s.tile_blocks) {  // tile rows and columns cut like BLOCK units
      const int R = (s.N + s.tile_height - 1) / s.tile_height;
      int i = 0, g = 0;
      while (static_cast<int64_t>(i + 1) * R / p.dp <= r) ++i;
      while (static_cast<int64_t>(g + 1) * C / p.dp <= c) ++g;
      return (i + g) % p.dp == p.b;
    }
    return (s.diagonal ? r + c : r * C + c) % p.dp == p.b;
  }
  return s.input_side ? KeptUnit(k, s.K, p, s.block_layout)
                      : KeptUnit(j, s.N, p, s.block_layout);
}

ApproxDropoutShape Shape(int N, int K, bool tile, bool input_side,
                         bool block, bool diagonal, bool tile_blocks = false) {
  ApproxDropoutShape s = {N, K, tile, input_side, block, diagonal,
                          tile_blocks, 4, 5};
  return s;
}

// The groups of every class cover exactly the kept weights of its pattern,
// each once; out sets and in sets of a class's groups are disjoint; every
// non-empty slice is in the one class of its patterns.
void CheckPlan(const ApproxDropoutShape& s, int rows,
               const std::vector<DropoutPattern>& patterns,
               const std::vector<DropoutPattern>* inputs, bool q_block) {
  ApproxDropoutPlan plan;
  plan.Plan(s, rows, patterns, inputs, q_block);
  const int S = patterns.size();
  std::vector<int> seen(S, 0);
  int compact = 0;
  for (int c = 0; c < plan.num_classes(); ++c) {
    const ApproxDropoutClass& cls = plan.cls(c);
    for (int sl : cls.slices) {
      ++seen[sl];
      EXPECT_EQ(cls.pattern.dp, patterns[sl].dp);
      EXPECT_EQ(cls.pattern.b, patterns[sl].b);
      if (inputs) {
        EXPECT_EQ(cls.input.dp, (*inputs)[sl].dp);
        EXPECT_EQ(cls.input.b, (*inputs)[sl].b);
      }
    }
    std::set<std::pair<int, int> > covered;
    std::set<int> outs, ins;
    for (const ApproxDropoutGroup& g : cls.groups) {
      const int nout = g.out.size(), nin = g.in.size();
      for (int a = 0; a < nout; ++a) {
        EXPECT_TRUE(outs.insert(g.out[a]).second) << "out " << g.out[a]
            << " in two groups";
      }
      for (int a = 0; a < nin; ++a) {
        EXPECT_TRUE(ins.insert(g.in[a]).second) << "in " << g.in[a]
            << " in two groups";
      }
      for (int a = 0; a < nout; ++a) {
        for (int i = 0; i < nin; ++i) {
          ASSERT_GE(g.out[a], 0);
          ASSERT_LT(g.out[a], s.N);
          ASSERT_GE(g.in[i], 0);
          ASSERT_LT(g.in[i], s.K);
          covered.insert(std::make_pair(g.out[a], g.in[i]));
        }
      }
      if (!g.w_view) compact += nout * nin;
      if (g.w_view && nout > 0 && nin > 0) {
        EXPECT_EQ(g.w_view_offset, g.out[0] * s.K + g.in[0]);
      }
    }
    for (int j = 0; j < s.N; ++j) {
      for (int k = 0; k < s.K; ++k) {
        EXPECT_EQ(covered.count(std::make_pair(j, k)) == 1,
                  KeptWeight(s, cls.pattern, inputs != NULL, cls.input,
                             q_block, j, k))
            << "weight (" << j << ", " << k << ") dp " << cls.pattern.dp
            << " b " << cls.pattern.b;
      }
    }
  }
  for (int sl = 0; sl < S; ++sl) {
    const bool empty = plan.SliceBegin(sl + 1) == plan.SliceBegin(sl);
    EXPECT_EQ(seen[sl], empty ? 0 : 1) << "slice " << sl;
  }
  EXPECT_EQ(plan.compact_weights(), compact);
  EXPECT_LE(compact, s.N * s.K);
}

}  // namespace

TEST(ApproxDropoutPlanTest, EveryModeCoversTheKeptWeights) {
  // 13 x 12 with 4 x 5 tiles: uneven blocks and short edge tiles.
  for (int mode = 0; mode < 7; ++mode) {
    const bool tile = mode >= 4;
    const ApproxDropoutShape s = Shape(13, 12, tile, mode == 1 || mode == 3,
                                       mode == 2 || mode == 3, mode == 5,
                                       mode == 6);
    for (int dp = 1; dp <= 12; ++dp) {
      for (int S = 1; S <= 5; S += 2) {
        for (int b = 0; b < dp; ++b) {
          std::vector<DropoutPattern> patterns;
          const DropoutPattern first = {dp, b};
          DropoutPatternSampler::SliceOffsets(first, S, &patterns);
          CheckPlan(s, 7, patterns, NULL, false);
        }
      }
    }
  }
}

TEST(ApproxDropoutPlanTest, PropagatedCoversKeptInputsOnly) {
  for (int layouts = 0; layouts < 4; ++layouts) {
    const ApproxDropoutShape s = Shape(13, 12, false, false, layouts & 1,
                                       false);
    const bool q_block = layouts & 2;
    for (int dp = 1; dp <= 4; ++dp) {
      for (int qdp = 1; qdp <= 6; ++qdp) {
        for (int S = 1; S <= 6; S += 5) {
          std::vector<DropoutPattern> patterns, inputs;
          const DropoutPattern first = {dp, dp - 1}, q = {qdp, qdp / 2};
          DropoutPatternSampler::SliceOffsets(first, S, &patterns);
          DropoutPatternSampler::SliceOffsets(q, S, &inputs);
          CheckPlan(s, 9, patterns, &inputs, q_block);
        }
      }
    }
  }
}

// BLOCK keeps plain submatrices: no gather or scatter on either side, with
// or without a BLOCK pattern bottom; STRIDED outputs read W in place but
// scatter y; STRIDED inputs gather.
TEST(ApproxDropoutPlanTest, BlockLayoutIsViewsOnly) {
  const DropoutPattern p = {3, 1}, q = {4, 2};
  std::vector<DropoutPattern> patterns(1, p), inputs(1, q);
  for (int side = 0; side < 2; ++side) {
    ApproxDropoutPlan plan;
    plan.Plan(Shape(13, 12, false, side == 1, true, false), 5, patterns,
              NULL, false);
    const ApproxDropoutGroup& g = plan.cls(0).groups[0];
    EXPECT_TRUE(g.w_view && g.out.contiguous() && g.in.contiguous());
    EXPECT_EQ(plan.compact_weights(), 0);
  }
  ApproxDropoutPlan plan;
  plan.Plan(Shape(13, 12, false, false, true, false), 5, patterns, &inputs,
            true);
  const ApproxDropoutGroup& g = plan.cls(0).groups[0];
  EXPECT_TRUE(g.w_view && g.out.contiguous() && g.in.contiguous());
  EXPECT_EQ(g.ldw, 12);
  plan.Plan(Shape(13, 12, false, false, false, false), 5, patterns, NULL,
            false);
  const ApproxDropoutGroup& strided = plan.cls(0).groups[0];
  EXPECT_TRUE(strided.w_view);
  EXPECT_FALSE(strided.out.contiguous());
  EXPECT_EQ(strided.ldw, 3 * 12);
  plan.Plan(Shape(13, 12, false, true, false, false), 5, patterns, NULL,
            false);
  EXPECT_FALSE(plan.cls(0).groups[0].w_view);
  EXPECT_FALSE(plan.cls(0).groups[0].in.contiguous());
}

// BLOCKS tiles: every kept block of every slice a view of W, x and y
// (nothing gathered), at any dp and slice count; a 32 x 32-tiled 2048 x 784
// layer at dp 3 gives blocks of 21 / 21 / 22 tile rows.
TEST(ApproxDropoutPlanTest, TileBlocksAreViewsOnly) {
  for (int dp = 1; dp <= 12; ++dp) {
    std::vector<DropoutPattern> patterns;
    const DropoutPattern first = {dp, dp / 2};
    DropoutPatternSampler::SliceOffsets(first, 4, &patterns);
    ApproxDropoutPlan plan;
    plan.Plan(Shape(13, 12, true, false, false, false, true), 9, patterns,
              NULL, false);
    EXPECT_EQ(plan.compact_weights(), 0) << "dp " << dp;
    for (int c = 0; c < plan.num_classes(); ++c) {
      for (const ApproxDropoutGroup& g : plan.cls(c).groups) {
        EXPECT_TRUE(g.w_view && g.out.contiguous() && g.in.contiguous())
            << "dp " << dp;
      }
    }
  }
  ApproxDropoutShape big = Shape(2048, 784, true, false, false, false, true);
  big.tile_height = big.tile_width = 32;
  const DropoutPattern p = {3, 0};
  ApproxDropoutPlan plan;
  plan.Plan(big, 128, std::vector<DropoutPattern>(1, p), NULL, false);
  ASSERT_EQ(plan.cls(0).groups.size(), 3u);
  // column block 0 (tiles 0-7: inputs 0-255) with row block 0 (tiles 0-20)
  const ApproxDropoutGroup& g = plan.cls(0).groups[0];
  EXPECT_EQ(g.in[0], 0);
  EXPECT_EQ(g.in.size(), 8 * 32);
  EXPECT_EQ(g.out[0], 0);
  EXPECT_EQ(g.out.size(), 21 * 32);
}

// Slices s and s + dp share a class (and its gathered W).
TEST(ApproxDropoutPlanTest, SlicesSharingAPatternShareAClass) {
  std::vector<DropoutPattern> patterns;
  const DropoutPattern first = {2, 1};
  DropoutPatternSampler::SliceOffsets(first, 5, &patterns);
  ApproxDropoutPlan plan;
  plan.Plan(Shape(13, 12, true, false, false, true), 10, patterns, NULL,
            false);
  ASSERT_EQ(plan.num_classes(), 2);
  EXPECT_EQ(plan.cls(0).slices, std::vector<int>({0, 2, 4}));
  EXPECT_EQ(plan.cls(1).slices, std::vector<int>({1, 3}));
}

// A layer's slices against its producer's: every row's segment carries the
// pattern of the layer's slice and of the producer's slice holding that row,
// neighbours differ, the bounds cover [0, rows) in order; for every row count
// 0..11 and slice counts 1..6 on each side (empty slices where rows < S).
// The bounds-based Plan then puts each row in the segment's class.
TEST(ApproxDropoutPlanTest, SegmentsOfTwoSlicings) {
  for (int rows = 0; rows <= 11; ++rows) {
    for (int S = 1; S <= 6; ++S) {
      for (int T = 1; T <= 6; ++T) {
        std::vector<DropoutPattern> own, inputs, seg_own, seg_in;
        DropoutPatternSampler::SliceOffsets(DropoutPattern{3, 1}, S, &own);
        DropoutPatternSampler::SliceOffsets(DropoutPattern{2, 0}, T, &inputs);
        std::vector<int> bounds;
        ApproxDropoutSegments(rows, own, inputs, &bounds, &seg_own, &seg_in);
        const std::string what = "rows " + std::to_string(rows) + ", S " +
            std::to_string(S) + ", T " + std::to_string(T);
        ASSERT_EQ(bounds.size(), seg_own.size() + 1) << what;
        ASSERT_EQ(seg_in.size(), seg_own.size()) << what;
        EXPECT_EQ(bounds.front(), 0) << what;
        EXPECT_EQ(bounds.back(), rows) << what;
        for (size_t g = 0; g + 1 < bounds.size(); ++g) {
          EXPECT_LE(bounds[g], bounds[g + 1]) << what;
          if (g > 0) {
            EXPECT_FALSE(seg_own[g].b == seg_own[g - 1].b &&
                         seg_in[g].b == seg_in[g - 1].b) << what << " merge";
          }
          for (int r = bounds[g]; r < bounds[g + 1]; ++r) {
            int s = 0, t = 0;  // the slices holding row r
            while (static_cast<int64_t>(s + 1) * rows / S <= r) ++s;
            while (static_cast<int64_t>(t + 1) * rows / T <= r) ++t;
            EXPECT_EQ(seg_own[g].b, own[s].b) << what << ", row " << r;
            EXPECT_EQ(seg_in[g].b, inputs[t].b) << what << ", row " << r;
          }
        }
        ApproxDropoutPlan plan;
        plan.Plan(Shape(12, 10, false, false, false, true), bounds, seg_own,
                  &seg_in, true);
        ASSERT_EQ(plan.num_slices(), static_cast<int>(seg_own.size()));
        for (int c = 0; c < plan.num_classes(); ++c) {
          for (int seg : plan.cls(c).slices) {
            EXPECT_EQ(plan.SliceBegin(seg), bounds[seg]);
            EXPECT_EQ(plan.cls(c).pattern.b, seg_own[seg].b);
            EXPECT_EQ(plan.cls(c).input.b, seg_in[seg].b);
          }
        }
      }
    }
  }
}

TEST(ApproxDropoutPlanTest, KeptUnitsRange) {
  const DropoutPattern p = {4, 3};
  const BlockStride kept = KeptUnits(p, true, 10);  // block 3 = [7, 10)
  ASSERT_EQ(kept.size(), 3);
  EXPECT_TRUE(kept.contiguous());
  EXPECT_FALSE(kept.all());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(kept[i], 7 + i);
  const DropoutPattern all = {1, 0};
  EXPECT_TRUE(KeptUnits(all, true, 10).all());
  EXPECT_TRUE(KeptUnits(all, false, 10).all());
}

}  // namespace caffe
