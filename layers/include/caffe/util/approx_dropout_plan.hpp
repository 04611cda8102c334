#ifndef CAFFE_UTIL_APPROX_DROPOUT_PLAN_HPP_
#define CAFFE_UTIL_APPROX_DROPOUT_PLAN_HPP_

#include <vector>

#include "caffe/util/approx_dropout_pattern.hpp"

namespace caffe {

// What an ApproxDropoutInnerProduct computes, in the terms the plan needs:
// y = x W^T with W num_output (N) x K, and which units its patterns address.
struct ApproxDropoutShape {
  int N, K;
  bool tile;          // TILE patterns (else ROW)
  bool input_side;    // ROW on the input side (else the output side)
  bool block_layout;  // ROW in the BLOCK layout (else STRIDED)
  bool diagonal;      // TILE with tile_order DIAGONAL (else ROW_MAJOR)
  int tile_height, tile_width;
};

// One GEMM's share of the kept work of one pattern: outputs `out` (columns of
// y, rows of W) against inputs `in` (columns of x and of W). The groups of a
// pattern have disjoint out sets and disjoint in sets. A contiguous set is
// read and written in place (a BLAS view); any other is gathered into, or
// scattered from, a compact buffer.
struct ApproxDropoutGroup {
  BlockStride out, in;
  // Compact x and y of a slice of m rows start at m * x_cols_before
  // (m * y_cols_before) in the slice's region of the compact x (y) buffer.
  int x_cols_before, y_cols_before;
  int w_offset;  // compact W[out, in] within the class's region of the buffer
  bool w_view;   // W[out, in] is read in place, at w_view_offset, with ldw
  int w_view_offset;
  int ldw;       // W[out, in]'s leading dimension, in place or compact
};

// The batch slices that share one pattern and one input pattern: computed
// with the same groups and the same gathered W.
struct ApproxDropoutClass {
  DropoutPattern pattern, input;  // input: dp = 1 without propagation
  std::vector<int> slices;        // non-empty slices only
  std::vector<ApproxDropoutGroup> groups;
  int w_base;                     // its region of the compact W buffers
  bool out_covered, in_covered;   // one group computes all outputs / inputs
};

// One iteration's work: the kept (output, input) parts of every batch slice
// as GEMM groups. Planning allocates nothing once the largest plan has been
// seen (classes only grow and their vectors keep their capacity).
class ApproxDropoutPlan {
 public:
  ApproxDropoutPlan() : num_classes_(0), rows_(0), num_slices_(1) {}
  // Slice s of the `rows` batch rows uses patterns[s]; when inputs is not
  // NULL, it also computes only the input units that inputs[s] kept (a
  // producer's ROW output pattern in its layout; the propagated pattern).
  // The patterns of one iteration must keep disjoint parts of W (as
  // DropoutPatternSampler::SliceOffsets's do); CHECK-fails otherwise.
  void Plan(const ApproxDropoutShape& shape, int rows,
            const std::vector<DropoutPattern>& patterns,
            const std::vector<DropoutPattern>* inputs, bool input_block);

  int num_slices() const { return num_slices_; }
  // First row of slice s (s = num_slices() gives the row count).
  int SliceBegin(int s) const {
    return static_cast<int>(static_cast<int64_t>(s) * rows_ / num_slices_);
  }
  int num_classes() const { return num_classes_; }
  const ApproxDropoutClass& cls(int c) const { return classes_[c]; }
  // Every class computes all outputs (inputs): y (dx) needs no zeroing.
  bool out_covered() const { return out_covered_; }
  bool in_covered() const { return in_covered_; }
  // Compact W values the plan gathers (<= N K).
  int compact_weights() const { return compact_weights_; }

  // The groups of one slice: the kept part of W for `pattern`, restricted to
  // the inputs `input` keeps when `propagated`.
  static void PlanGroups(const ApproxDropoutShape& shape,
                         const DropoutPattern& pattern, bool propagated,
                         const DropoutPattern& input, bool input_block,
                         ApproxDropoutClass* cls);

 private:
  std::vector<ApproxDropoutClass> classes_;
  int num_classes_, rows_, num_slices_, compact_weights_;
  bool out_covered_, in_covered_;
};

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_PLAN_HPP_
