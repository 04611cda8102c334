#ifndef CAFFE_UTIL_APPROX_DROPOUT_PATTERN_HPP_
#define CAFFE_UTIL_APPROX_DROPOUT_PATTERN_HPP_

#include <algorithm>
#include <string>
#include <vector>

#include "caffe/proto/caffe.pb.h"

// BlockStride is used by host code and CUDA kernels alike.
#ifdef __CUDACC__
#define APPROX_DROPOUT_HD __host__ __device__
#else
#define APPROX_DROPOUT_HD
#endif

namespace caffe {

// One iteration's regular dropout pattern (Song et al., Sec. III-A/B): the
// period dp and offset b. Which units it keeps depends on the layout
// (KeptUnits: unit j kept iff j mod dp == b with STRIDED, the paper's, or
// block b of dp contiguous blocks with BLOCK) and, for TILE, on the tile order
// (the plan: tile (r, c) kept iff (r C + c) or (r + c) mod dp == b).
struct DropoutPattern {
  int dp;
  int b;
};

// A set of indices in [0, dim) made of blocks of `block` consecutive indices:
// offset + blocks first, first + step, first + step * 2, ... (the last block
// may be cut short by dim). Every index set the patterns need has this form:
// kept neurons or input features (block 1, STRIDED layout), one contiguous
// range (BLOCK layout: Range), the columns or rows of kept tiles (block = tile
// size). It maps compact position i to an index with arithmetic only, so CPU
// loops and GPU kernels need no index arrays.
struct BlockStride {
  int first;   // first block
  int step;    // block stride, >= 1
  int block;   // block size, >= 1
  int dim;     // indices lie in [0, dim)
  int offset;  // added to every index (0 unless a Range)

  static BlockStride All(int dim) {
    BlockStride s = {0, 1, dim, dim, 0};
    return s;
  }
  // The indices [begin, end) of [0, dim), end > begin.
  static BlockStride Range(int begin, int end, int dim) {
    BlockStride s = {0, std::max(1, dim), std::max(1, end - begin), dim,
                     begin};
    return s;
  }
  bool all() const {
    return offset == 0 && first == 0 && (step == 1 || block >= dim);
  }
  int num_blocks() const {
    const int total = (dim - offset + block - 1) / block;
    return first < total ? (total - 1 - first) / step + 1 : 0;
  }
  // One run of consecutive indices (a BLAS view: pointer + leading dim).
  bool contiguous() const { return num_blocks() <= 1 || step == 1; }
  // Number of indices in the set.
  int size() const {
    const int n = num_blocks();
    if (n == 0) return 0;
    const int last_start = (first + (n - 1) * step) * block;
    return (n - 1) * block + std::min(block, dim - offset - last_start);
  }
  // The i-th index of the set, 0 <= i < size().
  APPROX_DROPOUT_HD int operator[](int i) const {
    return offset + (first + (i / block) * step) * block + i % block;
  }
};

// The units a ROW pattern keeps among `units`: STRIDED, j mod dp == b; BLOCK,
// block b of dp contiguous blocks [floor(i U / dp), floor((i+1) U / dp)).
BlockStride KeptUnits(const DropoutPattern& pattern, bool block_layout,
                      int units);

// The distribution K = {k_1 .. k_N} over dp (k_i = P(dp = i)), validated for
// a layer whose pattern acts on `num_units` units, and the per-iteration
// sampler. One implementation serves every approx-dropout layer.
class DropoutPatternSampler {
 public:
  // CHECK-fails, naming `layer_name` and the offending parameter, when
  // dropout_ratio is outside [0, 1), the distribution has negative entries,
  // does not sum to 1 (within 1e-4), misses dropout_ratio by more than 0.01,
  // or puts mass on a dp larger than num_units. An empty
  // pattern_distribution selects DefaultPatternDistribution.
  // field_prefix names the fields checked: "" for dropout_ratio and
  // pattern_distribution, "recurrent_" for the LSTM's recurrent path (whose
  // param then carries the recurrent rate and distribution in those fields).
  DropoutPatternSampler(const ApproxDropoutParameter& param, int num_units,
                        const std::string& layer_name,
                        const std::string& field_prefix = "");

  // dp ~ K, then b uniform in {0 .. dp-1}, both from Caffe's RNG (so
  // Caffe::set_random_seed makes the sequence reproducible): dp is
  // DpForUniform(u) for u = caffe_rng_rand() / 2^32, b is caffe_rng_rand()
  // modulo dp.
  DropoutPattern Sample() const;

  // S patterns for one iteration, one per batch slice. shared_dp = false:
  // S independent Sample()s. shared_dp = true: one Sample() (dp, b0), and
  // slice s gets (dp, (b0 + s) mod dp), so that slices see different units
  // while every slice, and every unit, keeps the marginal drop rate.
  void SampleSlices(int slices, bool shared_dp,
                    std::vector<DropoutPattern>* out) const;
  // The shared-dp slice patterns of one iteration pattern: slice s gets
  // (first.dp, (first.b + s) mod first.dp). (Also for fixed patterns.)
  static void SliceOffsets(const DropoutPattern& first, int slices,
                           std::vector<DropoutPattern>* out);

  // Use (dp, b) for every TRAIN iteration instead of sampling (tests, tools
  // and the LSTM's per-sequence patterns). CHECK-fails unless 1 <= dp <=
  // the number of units and 0 <= b < dp.
  void Fix(int dp, int b);
  // One iteration's slice patterns. TRAIN: the slice offsets (SliceOffsets)
  // of the fixed pattern, else of one Sample(); a distribution certain of
  // dp = 1 (rate 0) draws nothing, so that a layer that only skips leaves
  // Caffe's random stream as it was. TEST: one {1, 0}.
  void IterationPatterns(bool train, int slices,
                         std::vector<DropoutPattern>* out) const;

  // The dp that a uniform u in [0, 1] selects: the smallest i with
  // k_1 + .. + k_i > u, and the largest dp with k > 0 for u >= 1. Never a
  // dp of probability 0.
  int DpForUniform(double u) const;

  // k_1 .. k_M, M = the largest dp of non-zero probability (trailing zeros
  // are trimmed, for the default distribution too), normalised to sum 1.
  const std::vector<double>& distribution() const { return k_; }
  float dropout_ratio() const { return ratio_; }
  // 1 / (1 - dropout_ratio): keeps expectations equal to the dense layer.
  float scale() const { return 1.f / (1.f - ratio_); }

 private:
  static double Uniform();

  float ratio_;
  int num_units_;
  bool fixed_;
  DropoutPattern fixed_pattern_;
  std::vector<double> k_;
  std::vector<double> cdf_;
};

// sum_i k_i (i - 1) / i: the probability that a given unit is dropped (Eq. 2).
double PatternDropoutRate(const std::vector<double>& k);

// The built-in distribution for dropout rate p with dp <= max_dp (the
// "bounded" method of the approx_dropout Python package, bounded_search,
// which must return the same numbers within 1e-9: a gtest compares them on a
// table). Support: with q = 1 - p, the band is every dp with
//   |1/dp - q| <= min(band, relative_band * q)   (+ 1e-6, so that p given as
//                                                 a float such as 0.7f selects
//                                                 the same support as 0.7);
// if it holds both dp whose rates bracket p it is the support, otherwise
// those two are. Since |1/dp - q| = |(dp-1)/dp - p|, every iteration drops a
// fraction within `band` (0.05) of p, hence a spread (std of that fraction)
// of at most 0.05, except where only the bracketing pair can be used
// (p < 3/4), whose spread is the least possible; and keeps a fraction within
// (1 +- relative_band) q, which stops dp running up to max_dp above p = 0.9.
// On that support it
// maximises the entropy of the (dp, b) pairs, i.e. k_i proportional to
// i * exp(lambda * (i - 1)/i), with lambda set by bisection so that the rate
// is exactly p (all mass on the end dp when p is within 1e-12 of the rate of
// the support's first or last dp). p = 0.5 gives dp = 2; p = 0.3 dp = 1, 2
// (0.4, 0.6); p = 0.7 dp = 3, 4 (0.6, 0.4). Returns an empty vector when
// p > (max_dp - 1)/max_dp, which no distribution over dp <= max_dp reaches.
std::vector<double> DefaultPatternDistribution(double p, int max_dp,
                                               double band = 0.05,
                                               double relative_band = 0.5);

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_PATTERN_HPP_
