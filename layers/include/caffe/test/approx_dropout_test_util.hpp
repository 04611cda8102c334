#ifndef CAFFE_TEST_APPROX_DROPOUT_TEST_UTIL_HPP_
#define CAFFE_TEST_APPROX_DROPOUT_TEST_UTIL_HPP_

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/util/approx_dropout_pattern.hpp"

namespace caffe {

// The paper's rule, as the tests' reference: unit j is kept by (dp, b) iff
// j mod dp == b (STRIDED layout; row-major tile numbering for TILE).
inline bool StridedKept(const DropoutPattern& p, int unit) {
  return unit % p.dp == p.b;
}

// Upper 0.1 % point of the chi-squared distribution with df degrees of
// freedom (Wilson-Hilferty); fixed seeds keep the tests deterministic.
inline double ChiSquaredCritical(int df) {
  const double z = 3.09, a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

// After `trials` sampled patterns: each unit was dropped (dropped[u] times)
// with a frequency within 3 sigma of `rate`, and the counts of dp = 1, 2, ...
// (dp_count) fit the distribution k (chi-squared, p = 0.001).
inline void ExpectPatternStatistics(const std::vector<int>& dropped,
    const std::vector<int>& dp_count, const std::vector<double>& k,
    int trials, double rate) {
  const double sigma = std::sqrt(rate * (1 - rate) / trials);
  for (size_t u = 0; u < dropped.size(); ++u) {
    EXPECT_NEAR(dropped[u] / static_cast<double>(trials), rate, 3 * sigma)
        << "unit " << u;
  }
  // Only the dp of positive probability (the default distributions have
  // zeros); one of them alone leaves nothing to test.
  double stat = 0;
  int df = -1;
  for (size_t i = 0; i < k.size(); ++i) {
    if (k[i] <= 0) {
      EXPECT_EQ(dp_count[i], 0) << "dp = " << i + 1 << " has probability 0";
      continue;
    }
    stat += std::pow(dp_count[i] - k[i] * trials, 2) / (k[i] * trials);
    ++df;
  }
  if (df > 0) {
    EXPECT_LT(stat, ChiSquaredCritical(df))
        << "chi-squared of the dp counts, " << df << " degrees of freedom";
  }
}

}  // namespace caffe

#endif  // CAFFE_TEST_APPROX_DROPOUT_TEST_UTIL_HPP_
