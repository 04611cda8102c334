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
  bool diagonal;      // TILE with tile_order DIAGONAL
  bool tile_blocks;   // TILE with tile_order BLOCKS (neither: ROW_MAJOR)
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
  ApproxDropoutPlan() : num_classes_(0) {}
  // Slice s of the `rows` batch rows (S = patterns.size() even slices, row
  // s * rows / S on) uses patterns[s]; when inputs is not NULL, it also
  // computes only the input units that inputs[s] kept (a producer's ROW
  // output pattern in its layout; the propagated pattern). The patterns of
  // one iteration must keep disjoint parts of W (as
  // DropoutPatternSampler::SliceOffsets's do); CHECK-fails otherwise.
  void Plan(const ApproxDropoutShape& shape, int rows,
            const std::vector<DropoutPattern>& patterns,
            const std::vector<DropoutPattern>* inputs, bool input_block);
  // The same with slices given by their bounds: slice s is rows
  // [bounds[s], bounds[s + 1]) (a layer and its producer slicing the batch
  // differently: ApproxDropoutSegments).
  void Plan(const ApproxDropoutShape& shape, const std::vector<int>& bounds,
            const std::vector<DropoutPattern>& patterns,
            const std::vector<DropoutPattern>* inputs, bool input_block);

  int num_slices() const { return static_cast<int>(bounds_.size()) - 1; }
  // First row of slice s (s = num_slices() gives the row count).
  int SliceBegin(int s) const { return bounds_[s]; }
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
  void PlanBounded(const ApproxDropoutShape& shape,
                   const std::vector<DropoutPattern>& patterns,
                   const std::vector<DropoutPattern>* inputs,
                   bool input_block);

  std::vector<ApproxDropoutClass> classes_;
  std::vector<int> bounds_;
  int num_classes_, compact_weights_;
  bool out_covered_, in_covered_;
};

// Where a layer's own batch slices (`own`, even over `rows`) and its
// producer's (`inputs`, even too; S may differ) meet: the segments on which
// both patterns are constant, neighbours with the same pair merged (a TEST
// layer reading a TEST producer is one segment). Reuses the vectors'
// capacity: nothing is allocated once the largest case has been seen.
void ApproxDropoutSegments(int rows, const std::vector<DropoutPattern>& own,
                           const std::vector<DropoutPattern>& inputs,
                           std::vector<int>* bounds,
                           std::vector<DropoutPattern>* seg_own,
                           std::vector<DropoutPattern>* seg_inputs);

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_PLAN_HPP_
