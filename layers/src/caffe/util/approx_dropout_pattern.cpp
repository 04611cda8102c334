#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "caffe/common.hpp"
#include "caffe/util/approx_dropout_pattern.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

BlockStride KeptUnits(const DropoutPattern& p, bool block_layout,
                      int units) {
  if (!block_layout) {
    const BlockStride kept = {p.b, p.dp, 1, units, 0};
    return kept;
  }
  const int64_t u = units;
  return BlockStride::Range(static_cast<int>(p.b * u / p.dp),
                            static_cast<int>((p.b + 1) * u / p.dp), units);
}

double PatternDropoutRate(const std::vector<double>& k) {
  double rate = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    rate += k[i] * static_cast<double>(i) / static_cast<double>(i + 1);
  }
  return rate;
}

std::vector<double> DefaultPatternDistribution(double p, int max_dp,
                                               double band,
                                               double relative_band) {
  CHECK_GE(max_dp, 1) << "max_dp must be at least 1";
  CHECK(band >= 0 && relative_band >= 0) << "bands must be non-negative";
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
  // The band: kept fraction 1/dp within min(band, relative_band * q) of
  // q = 1 - p. Only +, -, *, / here (bit-identical to the Python), and the
  // 1e-6 slack keeps ties such as p = 0.7f, dp = 4 away from the last bit.
  // The band is the support if it holds both bracketing dp; otherwise the
  // support is just those two (adding band dp to an out-of-band bracket
  // would widen the spread beyond both the band and the pair's).
  const double q = 1.0 - p;
  const double width = std::min(band, relative_band * q) + 1e-6;
  std::vector<char> inside(max_dp);
  for (int i = 0; i < max_dp; ++i) {
    inside[i] = std::fabs(1.0 / (i + 1) - q) <= width;
  }
  std::vector<int> support;
  if (inside[lo] && inside[hi]) {
    for (int i = 0; i < max_dp; ++i) {
      if (inside[i]) support.push_back(i);
    }
  } else {
    support.push_back(lo);
    if (hi != lo) support.push_back(hi);
  }
  std::vector<double> k(max_dp, 0.0);
  // p at an end of the support (p = 0, p = (max_dp - 1)/max_dp, p = 0.75
  // with support dp = 4, 5): all mass there, no bisection to infinity.
  if (support.size() == 1 || p >= rate[support.back()] - eps) {
    k[support.back()] = 1.0;
    return k;
  }
  if (p <= rate[support.front()] + eps) {
    k[support.front()] = 1.0;
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
    }
    for (size_t j = 0; j < support.size(); ++j) {
      w[j] /= total;
      mean += w[j] * rate[support[j]];
    }
  };
  // |lambda| <= 64 dp_max^2 covers every p at least eps inside the support:
  // the top gap in rate is 1/(dp_max (dp_max - 1)).
  const double top_dp = support.back() + 1.0;
  double a = -64.0 * top_dp * top_dp, b = 64.0 * top_dp * top_dp;
  for (int iter = 0; iter < 200; ++iter) {
    const double mid = 0.5 * (a + b);
    if (mid == a || mid == b) break;  // adjacent doubles: nothing changes
    weights(mid);
    if (mean < p) a = mid; else b = mid;
  }
  weights(0.5 * (a + b));
  for (size_t j = 0; j < support.size(); ++j) k[support[j]] = w[j];
  return k;
}

DropoutPatternSampler::DropoutPatternSampler(
    const ApproxDropoutParameter& param, int num_units,
    const std::string& layer_name, const std::string& field_prefix)
    : ratio_(param.dropout_ratio()), num_units_(num_units), fixed_(false),
      fixed_pattern_{1, 0} {
  const std::string where =
      "Layer " + layer_name + ": approx_dropout_param." + field_prefix;
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
        << ", but " << field_prefix << "dropout_ratio is " << ratio_ << " (they must agree within "
        << "0.01)";
  }
  // Invariant: k_.back() > 0 (trailing zeros trimmed, for the default as for
  // a given distribution), so DpForUniform's clamp lands on a possible dp.
  while (!k_.empty() && k_.back() == 0) k_.pop_back();
  CHECK(!k_.empty()) << where << "pattern_distribution has no positive entry";
  double acc = 0;
  for (double k : k_) cdf_.push_back(acc += k);
  cdf_.back() = 1.0;
}

int DropoutPatternSampler::DpForUniform(double u) const {
  // The first dp whose cdf exceeds u: entries with k = 0 repeat the previous
  // cdf value and are never the first to exceed it. u >= 1 (a float uniform
  // can round up to 1) maps to the last dp, whose k is positive.
  const size_t i =
      std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
  return static_cast<int>(std::min(i, cdf_.size() - 1)) + 1;
}

DropoutPattern DropoutPatternSampler::Sample() const {
  DropoutPattern pattern;
  pattern.dp = DpForUniform(Uniform());
  pattern.b = static_cast<int>(caffe_rng_rand() % pattern.dp);
  return pattern;
}

double DropoutPatternSampler::Uniform() {
  // One 32-bit draw of Caffe's RNG, exact in double: u in [0, 1 - 2^-32].
  return caffe_rng_rand() * (1.0 / 4294967296.0);
}

void DropoutPatternSampler::SampleSlices(
    int slices, bool shared_dp, std::vector<DropoutPattern>* out) const {
  CHECK_GE(slices, 1) << "SampleSlices needs at least one slice";
  out->resize(slices);
  if (!shared_dp) {
    for (int s = 0; s < slices; ++s) (*out)[s] = Sample();
    return;
  }
  SliceOffsets(Sample(), slices, out);
}

void DropoutPatternSampler::Fix(int dp, int b) {
  CHECK_GE(dp, 1) << "FixPattern: dp must be >= 1";
  CHECK_LE(dp, num_units_) << "FixPattern: dp must be <= " << num_units_;
  CHECK(b >= 0 && b < dp) << "FixPattern: b must be in [0, dp)";
  fixed_ = true;
  fixed_pattern_ = DropoutPattern{dp, b};
}

void DropoutPatternSampler::IterationPatterns(bool train, int slices,
    std::vector<DropoutPattern>* out) const {
  if (!train) {
    SliceOffsets(DropoutPattern{1, 0}, 1, out);
  } else if (fixed_ || k_.size() == 1) {
    SliceOffsets(fixed_ ? fixed_pattern_ : DropoutPattern{1, 0}, slices, out);
  } else {
    SampleSlices(slices, true, out);
  }
}

void DropoutPatternSampler::SliceOffsets(const DropoutPattern& first,
    int slices, std::vector<DropoutPattern>* out) {
  CHECK_GE(slices, 1) << "SliceOffsets needs at least one slice";
  out->resize(slices);
  for (int s = 0; s < slices; ++s) {
    (*out)[s].dp = first.dp;
    (*out)[s].b = (first.b + s) % first.dp;
  }
}

}  // namespace caffe
