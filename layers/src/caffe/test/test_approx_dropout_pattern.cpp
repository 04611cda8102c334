#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/common.hpp"
#include "caffe/util/approx_dropout_pattern.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

// Upper 0.1 % point of the chi-squared distribution with df degrees of
// freedom (Wilson-Hilferty); fixed seeds keep these tests deterministic.
double ChiSquaredCritical(int df) {
  const double z = 3.09, a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

// Pearson's statistic over bins with an expected count of at least 5.
double ChiSquared(const std::vector<int>& observed,
                  const std::vector<double>& expected, int* df) {
  double stat = 0;
  *df = -1;
  for (size_t i = 0; i < observed.size(); ++i) {
    if (expected[i] < 5) continue;
    stat += std::pow(observed[i] - expected[i], 2) / expected[i];
    ++*df;
  }
  return stat;
}

TEST(BlockStrideTest, RowPatternIndices) {
  const BlockStride s = {2, 3, 1, 10};  // dp = 3, b = 2 over 10 units
  ASSERT_EQ(s.size(), 3);
  EXPECT_EQ(s[0], 2);
  EXPECT_EQ(s[1], 5);
  EXPECT_EQ(s[2], 8);
  EXPECT_FALSE(s.all());
  const BlockStride none = {3, 4, 1, 3};  // b beyond the units
  EXPECT_EQ(none.size(), 0);
}

TEST(BlockStrideTest, TileColumnsWithShortLastTile) {
  // 11 columns in tiles of 4: tiles 0..2, the last one 3 wide; keep 0 and 2.
  const BlockStride s = {0, 2, 4, 11};
  ASSERT_EQ(s.size(), 7);
  const int expected[] = {0, 1, 2, 3, 8, 9, 10};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(s[i], expected[i]) << i;
}

TEST(BlockStrideTest, AllIsIdentity) {
  const BlockStride s = BlockStride::All(7);
  ASSERT_TRUE(s.all());
  ASSERT_EQ(s.size(), 7);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(s[i], i);
  const BlockStride contiguous = {0, 1, 1, 5};
  EXPECT_TRUE(contiguous.all());
}

TEST(DefaultPatternDistributionTest, MeetsTheRateExactly) {
  const double rates[] = {0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.9};
  const int max_dps[] = {16, 64, 2048};
  for (double p : rates) {
    for (int n : max_dps) {
      const std::vector<double> k = DefaultPatternDistribution(p, n);
      ASSERT_EQ(static_cast<int>(k.size()), n) << p << " " << n;
      double sum = 0;
      for (size_t i = 0; i < k.size(); ++i) {
        EXPECT_GE(k[i], 0);
        sum += k[i];
        // bounded support: rates within the band of p, or the bracketing dp
        if (k[i] > 0) {
          const double r = static_cast<double>(i) / (i + 1);
          const double next = static_cast<double>(i + 1) / (i + 2);
          const double prev = i > 0 ? (i - 1.0) / i : -1;
          EXPECT_TRUE(std::fabs(r - p) <= 0.1 + 1e-6 ||
                      (r <= p && next >= p) || (r >= p && prev <= p))
              << "dp " << i + 1 << " has rate " << r << " for p " << p;
        }
      }
      EXPECT_NEAR(sum, 1.0, 1e-12);
      EXPECT_NEAR(PatternDropoutRate(k), p, 1e-9) << p << " " << n;
    }
  }
}

TEST(DefaultPatternDistributionTest, KnownValues) {
  // p = 0.5 sits exactly on dp = 2, and no other dp is within the band.
  std::vector<double> k = DefaultPatternDistribution(0.5, 16);
  EXPECT_DOUBLE_EQ(k[1], 1.0);
  // p = 0.3 lies between dp = 1 (rate 0) and dp = 2 (rate 1/2).
  k = DefaultPatternDistribution(0.3, 16);
  EXPECT_NEAR(k[0], 0.4, 1e-9);
  EXPECT_NEAR(k[1], 0.6, 1e-9);
  // p = 0.7: dp 3, 4 and 5 (rates 2/3, 3/4, 4/5) are within 0.1 of p.
  k = DefaultPatternDistribution(0.7, 16);
  EXPECT_GT(k[2], 0);
  EXPECT_GT(k[3], 0);
  EXPECT_GT(k[4], 0);
  EXPECT_EQ(k[1] + k[5], 0);
}

TEST(DefaultPatternDistributionTest, UnreachableRateIsEmpty) {
  EXPECT_TRUE(DefaultPatternDistribution(0.8, 4).empty());  // 4 gives 0.75
  EXPECT_FALSE(DefaultPatternDistribution(0.75, 4).empty());
}

TEST(DropoutPatternSamplerTest, HistogramsMatchTheDistribution) {
  Caffe::set_random_seed(1701);
  ApproxDropoutParameter param;
  param.set_dropout_ratio(0.61);
  const double k[] = {0.1, 0.2, 0.3, 0.2, 0.2};
  for (double v : k) param.add_pattern_distribution(v);
  ASSERT_NEAR(PatternDropoutRate(std::vector<double>(k, k + 5)), 0.61, 1e-9);
  DropoutPatternSampler sampler(param, 50, "sampler");
  const int trials = 10000;
  std::vector<int> dp_count(5, 0), b_count_of_5(5, 0);
  for (int t = 0; t < trials; ++t) {
    const DropoutPattern p = sampler.Sample();
    ASSERT_GE(p.dp, 1);
    ASSERT_LE(p.dp, 5);
    ASSERT_GE(p.b, 0);
    ASSERT_LT(p.b, p.dp);
    ++dp_count[p.dp - 1];
    if (p.dp == 5) ++b_count_of_5[p.b];
  }
  std::vector<double> expected(5);
  for (int i = 0; i < 5; ++i) expected[i] = k[i] * trials;
  int df;
  double stat = ChiSquared(dp_count, expected, &df);
  EXPECT_LT(stat, ChiSquaredCritical(df)) << "dp histogram, df " << df;
  std::vector<double> uniform(5, dp_count[4] / 5.0);
  stat = ChiSquared(b_count_of_5, uniform, &df);
  EXPECT_LT(stat, ChiSquaredCritical(df)) << "b histogram, df " << df;
}

TEST(DropoutPatternSamplerTest, SeedMakesItReproducible) {
  ApproxDropoutParameter param;
  param.set_dropout_ratio(0.7);
  DropoutPatternSampler sampler(param, 100, "sampler");
  Caffe::set_random_seed(7);
  std::vector<int> first;
  for (int t = 0; t < 50; ++t) {
    const DropoutPattern p = sampler.Sample();
    first.push_back(p.dp * 1000 + p.b);
  }
  Caffe::set_random_seed(7);
  for (int t = 0; t < 50; ++t) {
    const DropoutPattern p = sampler.Sample();
    EXPECT_EQ(first[t], p.dp * 1000 + p.b);
  }
}

class DropoutPatternSamplerDeathTest : public ::testing::Test {
 protected:
  void Expect(const ApproxDropoutParameter& param, int units,
              const std::string& message) {
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
    EXPECT_DEATH(DropoutPatternSampler(param, units, "fc7"), message);
  }
};

TEST_F(DropoutPatternSamplerDeathTest, RateOutsideRange) {
  ApproxDropoutParameter param;
  param.set_dropout_ratio(1.0);
  Expect(param, 10, "Layer fc7: approx_dropout_param.dropout_ratio must be in "
                    "\\[0, 1\\), got 1");
  param.set_dropout_ratio(-0.1);
  Expect(param, 10, "dropout_ratio must be in \\[0, 1\\), got -0.1");
}

TEST_F(DropoutPatternSamplerDeathTest, NegativeEntry) {
  ApproxDropoutParameter param;
  param.set_dropout_ratio(0.5);
  param.add_pattern_distribution(-0.5);
  param.add_pattern_distribution(1.5);
  Expect(param, 10, "pattern_distribution\\[0\\] \\(P\\(dp = 1\\)\\) is "
                    "negative: -0.5");
}

TEST_F(DropoutPatternSamplerDeathTest, NotNormalised) {
  ApproxDropoutParameter param;
  param.set_dropout_ratio(0.5);
  param.add_pattern_distribution(0.2);
  param.add_pattern_distribution(0.7);
  Expect(param, 10, "pattern_distribution sums to 0.9, not 1");
}

TEST_F(DropoutPatternSamplerDeathTest, RateMismatch) {
  ApproxDropoutParameter param;
  param.set_dropout_ratio(0.7);
  param.add_pattern_distribution(0);
  param.add_pattern_distribution(1);
  Expect(param, 10, "pattern_distribution drops units with probability 0.5, "
                    "but dropout_ratio is 0.7");
}

TEST_F(DropoutPatternSamplerDeathTest, DpLargerThanUnits) {
  ApproxDropoutParameter param;
  param.set_dropout_ratio(0.75);
  for (int i = 0; i < 3; ++i) param.add_pattern_distribution(0);
  param.add_pattern_distribution(1);
  Expect(param, 3, "pattern_distribution gives dp = 4 probability 1, but the "
                   "pattern acts on only 3 units");
}

TEST_F(DropoutPatternSamplerDeathTest, DefaultCannotReachRate) {
  ApproxDropoutParameter param;
  param.set_dropout_ratio(0.8);
  Expect(param, 4, "dropout_ratio 0.8 cannot be reached with dp <= 4");
}

}  // namespace caffe
