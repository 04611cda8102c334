#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/util/approx_dropout_ops.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

// The engine's primitives against plain loops over BlockStride's own
// indexing, on index sets at the edges; and (CUDA builds, wherever a GPU is)
// the GPU primitives against the CPU ones on the same sets.

// Sets of [0, dim): all, strided single indices, blocks with a short last
// block, an offset range, one index, none.
std::vector<BlockStride> EdgeSets(int dim) {
  std::vector<BlockStride> sets;
  sets.push_back(BlockStride::All(dim));
  const BlockStride strided = {1, 3, 1, dim, 0};
  const BlockStride blocks = {1, 2, 3, dim, 0};
  const BlockStride wide = {0, 2, 4, dim, 0};
  const BlockStride single = {dim - 1, 1, 1, dim, 0};
  const BlockStride none = {dim, 1, 1, dim, 0};
  sets.push_back(strided);
  sets.push_back(blocks);
  sets.push_back(wide);
  sets.push_back(BlockStride::Range(2, dim - 1, dim));
  sets.push_back(single);
  sets.push_back(none);
  return sets;
}

template <typename Dtype>
void FillUniform(Blob<Dtype>* blob, int seed) {
  Caffe::set_random_seed(seed);
  FillerParameter param;
  param.set_min(-1);
  param.set_max(1);
  UniformFiller<Dtype>(param).Fill(blob);
}

// Runs every primitive of `ops` on fixed inputs and returns all results in
// one vector, so that two devices can be compared value by value.
template <typename Dtype>
std::vector<Dtype> RunEveryOp(const ApproxDropoutOps<Dtype>& ops) {
  const int rows = 7, dim = 11, ld = 13;
  std::vector<Dtype> out;
  Blob<Dtype> src(1, 1, rows, ld), dst(1, 1, rows, ld), compact(1, 1, rows, dim);
  Blob<Dtype> bias(1, 1, 1, ld), sums(1, 1, 1, 2 * ld);
  FillUniform(&src, 1);
  FillUniform(&bias, 2);
  const BlockStride row_maps[] = {BlockStride::All(rows),
                                  {0, 2, 1, rows, 0}};  // rows 0, 2, 4, 6
  for (const BlockStride& cols : EdgeSets(dim)) {
    for (const BlockStride& row_map : row_maps) {
      const int r = row_map.size();
      ops.set_zero(compact.count(), ops.mutable_data(&compact));
      ops.gather(r, row_map, cols, ops.data(src), ld, ops.mutable_data(&compact));
      out.insert(out.end(), compact.cpu_data(), compact.cpu_data() + compact.count());
      for (int accumulate = 0; accumulate < 2; ++accumulate) {
        FillUniform(&dst, 3);
        ops.scatter(r, row_map, cols, ops.data(compact), ops.mutable_data(&dst),
                    ld, accumulate);
        out.insert(out.end(), dst.cpu_data(), dst.cpu_data() + dst.count());
      }
    }
    FillUniform(&dst, 4);
    ops.add_bias(rows, cols, Dtype(0.5), ops.data(bias), ops.mutable_data(&dst), ld);
    out.insert(out.end(), dst.cpu_data(), dst.cpu_data() + dst.count());
  }
  for (int inc = 1; inc <= 2; ++inc) {
    FillUniform(&sums, 5);
    ops.add_column_sums(rows, dim, Dtype(-2), ops.data(src), ld,
                        ops.mutable_data(&sums), inc);
    out.insert(out.end(), sums.cpu_data(), sums.cpu_data() + sums.count());
  }
  // gemm: every transposition, padded leading dimensions, beta 0 and 1, an
  // empty product
  Blob<Dtype> a(1, 1, 6, 9), b(1, 1, 8, 9), c(1, 1, 8, 10);
  FillUniform(&a, 6);
  FillUniform(&b, 7);
  const int m = 5, n = 4, k = 3;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      for (int beta = 0; beta < 2; ++beta) {
        FillUniform(&c, 8);
        ops.gemm(ta, tb, m, n, k, Dtype(0.5), ops.data(a), 9, ops.data(b), 9,
                 Dtype(beta), ops.mutable_data(&c), 10);
        out.insert(out.end(), c.cpu_data(), c.cpu_data() + c.count());
      }
    }
  }
  FillUniform(&c, 9);
  ops.gemm(false, true, 0, n, k, Dtype(1), ops.data(a), 9, ops.data(b), 9,
           Dtype(0), ops.mutable_data(&c), 10);
  out.insert(out.end(), c.cpu_data(), c.cpu_data() + c.count());
  return out;
}

template <typename Dtype>
class ApproxDropoutOpsTest : public ::testing::Test {};

TYPED_TEST_CASE(ApproxDropoutOpsTest, TestDtypes);

TYPED_TEST(ApproxDropoutOpsTest, TestEdgeSetsAreWhatTheySay) {
  const std::vector<BlockStride> sets = EdgeSets(11);
  const int sizes[] = {11, 4, 5, 7, 8, 1, 0};  // strided 1 4 7 10; 3-5 9-10
  ASSERT_EQ(sets.size(), 7u);
  for (size_t i = 0; i < sets.size(); ++i) EXPECT_EQ(sets[i].size(), sizes[i]);
  EXPECT_EQ(sets[2][3], 9);
  EXPECT_EQ(sets[4][0], 2);
}

TYPED_TEST(ApproxDropoutOpsTest, TestGatherScatterBiasMatchLoops) {
  typedef TypeParam Dtype;
  const ApproxDropoutOps<Dtype>& ops = ApproxDropoutCpuOps<Dtype>();
  const int rows = 7, dim = 11, ld = 13;
  Blob<Dtype> src(1, 1, rows, ld), dst(1, 1, rows, ld), compact(1, 1, rows, dim);
  Blob<Dtype> bias(1, 1, 1, ld);
  FillUniform(&src, 11);
  FillUniform(&bias, 12);
  const BlockStride row_maps[] = {BlockStride::All(rows), {1, 3, 1, rows, 0}};
  for (const BlockStride& cols : EdgeSets(dim)) {
    const int nc = cols.size();
    for (const BlockStride& row_map : row_maps) {
      const int r = row_map.size();
      ops.gather(r, row_map, cols, ops.data(src), ld, ops.mutable_data(&compact));
      for (int i = 0; i < r; ++i) {
        for (int j = 0; j < nc; ++j) {
          EXPECT_EQ(compact.cpu_data()[i * nc + j],
                    src.cpu_data()[row_map[i] * ld + cols[j]]);
        }
      }
      for (int accumulate = 0; accumulate < 2; ++accumulate) {
        FillUniform(&dst, 13);
        std::vector<Dtype> want(dst.cpu_data(), dst.cpu_data() + dst.count());
        for (int i = 0; i < r; ++i) {
          for (int j = 0; j < nc; ++j) {
            Dtype& w = want[row_map[i] * ld + cols[j]];
            w = (accumulate ? w : Dtype(0)) + compact.cpu_data()[i * nc + j];
          }
        }
        ops.scatter(r, row_map, cols, ops.data(compact), ops.mutable_data(&dst),
                    ld, accumulate);
        for (int i = 0; i < dst.count(); ++i) {
          EXPECT_NEAR(dst.cpu_data()[i], want[i], 1e-6) << i;
        }
      }
    }
    FillUniform(&dst, 14);
    std::vector<Dtype> want(dst.cpu_data(), dst.cpu_data() + dst.count());
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < nc; ++j) {
        want[i * ld + cols[j]] += Dtype(0.5) * bias.cpu_data()[cols[j]];
      }
    }
    ops.add_bias(rows, cols, Dtype(0.5), ops.data(bias), ops.mutable_data(&dst), ld);
    for (int i = 0; i < dst.count(); ++i) {
      EXPECT_NEAR(dst.cpu_data()[i], want[i], 1e-6) << i;
    }
  }
}

TYPED_TEST(ApproxDropoutOpsTest, TestGemmAndSumsMatchLoops) {
  typedef TypeParam Dtype;
  const ApproxDropoutOps<Dtype>& ops = ApproxDropoutCpuOps<Dtype>();
  Blob<Dtype> a(1, 1, 6, 9), b(1, 1, 8, 9), c(1, 1, 8, 10);
  FillUniform(&a, 21);
  FillUniform(&b, 22);
  const int m = 5, n = 4, k = 3;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      for (int beta = 0; beta < 2; ++beta) {  // beta 0: C's old values go
        FillUniform(&c, 23);
        std::vector<Dtype> want(c.cpu_data(), c.cpu_data() + c.count());
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            Dtype sum = 0;
            for (int l = 0; l < k; ++l) {
              sum += (ta ? a.cpu_data()[l * 9 + i] : a.cpu_data()[i * 9 + l]) *
                     (tb ? b.cpu_data()[j * 9 + l] : b.cpu_data()[l * 9 + j]);
            }
            want[i * 10 + j] = Dtype(0.5) * sum + beta * want[i * 10 + j];
          }
        }
        ops.gemm(ta, tb, m, n, k, Dtype(0.5), ops.data(a), 9, ops.data(b), 9,
                 Dtype(beta), ops.mutable_data(&c), 10);
        for (int i = 0; i < c.count(); ++i) {
          EXPECT_NEAR(c.cpu_data()[i], want[i], 1e-5)
              << ta << tb << beta << " " << i;
        }
      }
    }
  }
  // an empty product leaves C alone
  FillUniform(&c, 25);
  const std::vector<Dtype> before(c.cpu_data(), c.cpu_data() + c.count());
  ops.gemm(false, true, 0, n, k, Dtype(1), ops.data(a), 9, ops.data(b), 9,
           Dtype(0), ops.mutable_data(&c), 10);
  for (int i = 0; i < c.count(); ++i) EXPECT_EQ(c.cpu_data()[i], before[i]);
  Blob<Dtype> sums(1, 1, 1, 20);
  for (int inc = 1; inc <= 2; ++inc) {
    FillUniform(&sums, 24);
    std::vector<Dtype> want(sums.cpu_data(), sums.cpu_data() + sums.count());
    for (int r = 0; r < 6; ++r) {
      for (int i = 0; i < 7; ++i) {
        want[inc * i] += Dtype(-2) * a.cpu_data()[r * 9 + i];
      }
    }
    ops.add_column_sums(6, 7, Dtype(-2), ops.data(a), 9, ops.mutable_data(&sums),
                        inc);
    for (int i = 0; i < sums.count(); ++i) {
      EXPECT_NEAR(sums.cpu_data()[i], want[i], 1e-5) << inc << " " << i;
    }
  }
  ops.set_zero(sums.count(), ops.mutable_data(&sums));
  for (int i = 0; i < sums.count(); ++i) EXPECT_EQ(sums.cpu_data()[i], 0);
  EXPECT_EQ(ops.data(a), a.cpu_data());
  EXPECT_EQ(ops.mutable_diff(&a), a.mutable_cpu_diff());
}

#ifndef CPU_ONLY
// The GPU primitives (kernels and cuBLAS) give the CPU's numbers (its own
// test case, which the GPU bundle runs only where a GPU is).
template <typename Dtype>
class ApproxDropoutOpsGpuTest : public ::testing::Test {};

TYPED_TEST_CASE(ApproxDropoutOpsGpuTest, TestDtypes);

TYPED_TEST(ApproxDropoutOpsGpuTest, TestGpuMatchesCpu) {
  typedef TypeParam Dtype;
  const std::vector<Dtype> cpu = RunEveryOp(ApproxDropoutCpuOps<Dtype>());
  const std::vector<Dtype> gpu = RunEveryOp(ApproxDropoutGpuOps<Dtype>());
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_NEAR(gpu[i], cpu[i], 1e-5 * std::max(Dtype(1), std::fabs(cpu[i])))
        << i;
  }
}
#endif

// The comparison helper itself: every primitive contributes values, and
// they are not all zero (so the GPU test compares something).
TYPED_TEST(ApproxDropoutOpsTest, TestRunEveryOpCoversEveryPrimitive) {
  typedef TypeParam Dtype;
  const std::vector<Dtype> values = RunEveryOp(ApproxDropoutCpuOps<Dtype>());
  // per index set: 2 row maps x (gather + 2 scatters), add_bias; 2 column
  // sums; 9 products
  EXPECT_EQ(values.size(), 7u * (2 * (7 * 11 + 2 * 7 * 13) + 7 * 13) + 2 * 26 +
                               9 * 80);
  size_t nonzero = 0;
  for (Dtype v : values) nonzero += v != 0;
  EXPECT_GT(nonzero, values.size() / 2);
}

}  // namespace caffe
