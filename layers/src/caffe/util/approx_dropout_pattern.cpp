#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "caffe/common.hpp"
#include "caffe/util/approx_dropout_pattern.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

double PatternDropoutRate(const std::vector<double>& k) {
  double rate = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    rate += k[i] * static_cast<double>(i) / static_cast<double>(i + 1);
  }
  return rate;
}

std::vector<double> DefaultPatternDistribution(double p, int max_dp,
                                               double band) {
  CHECK_GE(max_dp, 1) << "max_dp must be at least 1";
  std::vector<double> rate(max_dp);
  for (int i = 0; i < max_dp; ++i) rate[i] = static_cast<double>(i) / (i + 1);
  const double eps = 1e-12;
  if (p > rate[max_dp - 1] + eps) return std::vector<double>();
  // lo: largest dp whose rate <= p; hi: smallest dp whose rate >= p.
  int lo = 0, hi = max_dp - 1;
  for (int i = 0; i < max_dp; ++i) {
    if (rate[i] <= p + eps) lo = i;
  }
  for (int i = max_dp - 1; i >= 0; --i) {
    if (rate[i] >= p - eps) hi = i;
  }
  std::vector<int> support;
  for (int i = 0; i < max_dp; ++i) {
    if (i == lo || i == hi || std::fabs(rate[i] - p) <= band + 1e-6) {
      support.push_back(i);
    }
  }
  std::vector<double> k(max_dp, 0.0);
  if (support.size() == 1) {
    k[support[0]] = 1.0;
    return k;
  }
  // k_i ~ (i+1) exp(lambda rate_i): the rate is increasing in lambda.
  std::vector<double> w(support.size());
  double mean = 0;
  auto weights = [&](double lambda) {
    double top = -INFINITY;
    for (size_t j = 0; j < support.size(); ++j) {
      top = std::max(top, lambda * rate[support[j]]);
    }
    double total = 0;
    mean = 0;
    for (size_t j = 0; j < support.size(); ++j) {
      const int i = support[j];
      w[j] = (i + 1) * std::exp(lambda * rate[i] - top);
      total += w[j];
      mean += w[j] * rate[i];
    }
    for (size_t j = 0; j < support.size(); ++j) w[j] /= total;
    mean /= total;
  };
  double a = -1e4, b = 1e4;
  for (int iter = 0; iter < 200; ++iter) {
    const double mid = 0.5 * (a + b);
    weights(mid);
    if (mean < p) a = mid; else b = mid;
  }
  weights(0.5 * (a + b));
  for (size_t j = 0; j < support.size(); ++j) k[support[j]] = w[j];
  return k;
}

DropoutPatternSampler::DropoutPatternSampler(
    const ApproxDropoutParameter& param, int num_units,
    const std::string& layer_name) : ratio_(param.dropout_ratio()) {
  const std::string where = "Layer " + layer_name + ": approx_dropout_param.";
  CHECK_GE(ratio_, 0.f) << where << "dropout_ratio must be in [0, 1), got "
                        << ratio_;
  CHECK_LT(ratio_, 1.f) << where << "dropout_ratio must be in [0, 1), got "
                        << ratio_;
  CHECK_GE(num_units, 1) << where << "pattern acts on no units";
  if (param.pattern_distribution_size() == 0) {
    k_ = DefaultPatternDistribution(ratio_, num_units);
    CHECK(!k_.empty()) << where << "dropout_ratio " << ratio_
        << " cannot be reached with dp <= " << num_units
        << " (the number of units the pattern acts on); the largest "
        << "reachable rate is " << (num_units - 1.0) / num_units;
  } else {
    double sum = 0;
    for (int i = 0; i < param.pattern_distribution_size(); ++i) {
      const double k = param.pattern_distribution(i);
      CHECK_GE(k, 0) << where << "pattern_distribution[" << i
                     << "] (P(dp = " << i + 1 << ")) is negative: " << k;
      sum += k;
      k_.push_back(k);
    }
    CHECK_LE(std::fabs(sum - 1.0), 1e-4) << where
        << "pattern_distribution sums to " << sum << ", not 1";
    for (double& k : k_) k /= sum;
    while (k_.back() == 0) k_.pop_back();
    const int max_dp = static_cast<int>(k_.size());
    CHECK_LE(max_dp, num_units) << where << "pattern_distribution gives dp = "
        << max_dp << " probability " << k_.back() << ", but the pattern acts "
        << "on only " << num_units << " units (dp must be <= " << num_units
        << ")";
    const double rate = PatternDropoutRate(k_);
    CHECK_LE(std::fabs(rate - ratio_), 0.01) << where
        << "pattern_distribution drops units with probability " << rate
        << ", but dropout_ratio is " << ratio_ << " (they must agree within "
        << "0.01)";
  }
  double acc = 0;
  for (double k : k_) cdf_.push_back(acc += k);
  cdf_.back() = 1.0;
}

DropoutPattern DropoutPatternSampler::Sample() const {
  float u;
  caffe_rng_uniform<float>(1, 0.f, 1.f, &u);
  const int dp = static_cast<int>(
      std::upper_bound(cdf_.begin(), cdf_.end(), static_cast<double>(u))
      - cdf_.begin()) + 1;
  DropoutPattern pattern;
  pattern.dp = std::min(dp, static_cast<int>(cdf_.size()));
  pattern.b = static_cast<int>(caffe_rng_rand() % pattern.dp);
  return pattern;
}

}  // namespace caffe
