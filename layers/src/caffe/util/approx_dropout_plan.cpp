#include <algorithm>
#include <vector>

#include "caffe/common.hpp"
#include "caffe/util/approx_dropout_plan.hpp"

namespace caffe {

namespace {

int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }

// First of U units in block i of dp contiguous blocks (the BLOCK layout).
int BlockBegin(int i, int dp, int U) {
  return static_cast<int>(static_cast<int64_t>(i) * U / dp);
}

bool Same(const DropoutPattern& a, const DropoutPattern& b) {
  return a.dp == b.dp && a.b == b.b;
}

}  // namespace

void ApproxDropoutPlan::PlanGroups(const ApproxDropoutShape& shape,
    const DropoutPattern& p, bool propagated, const DropoutPattern& input,
    bool input_block, ApproxDropoutClass* cls) {
  const int N = shape.N, K = shape.K;
  std::vector<ApproxDropoutGroup>& groups = cls->groups;
  groups.clear();
  CHECK(!propagated || (!shape.tile && !shape.input_side))
      << "approx-dropout plan: a propagated pattern needs ROW on the output "
      << "side";
  ApproxDropoutGroup group;
  if (shape.tile) {
    const int th = shape.tile_height, tw = shape.tile_width;
    const int R = (N + th - 1) / th, C = (K + tw - 1) / tw;
    // BLOCKS: every column block (some are empty when dp > C)
    const int column_groups = shape.tile_blocks ? p.dp : std::min(p.dp, C);
    for (int g = 0; g < column_groups; ++g) {
      if (shape.tile_blocks) {
        // Column block g of tiles against row block (b - g) mod dp: one
        // submatrix of W (a view, as are x's columns and y's).
        const int i = ((p.b - g) % p.dp + p.dp) % p.dp;
        const int c0 = BlockBegin(g, p.dp, C), c1 = BlockBegin(g + 1, p.dp, C);
        const int r0 = BlockBegin(i, p.dp, R), r1 = BlockBegin(i + 1, p.dp, R);
        if (c1 == c0 || r1 == r0) continue;
        group.in = BlockStride::Range(c0 * tw, std::min(K, c1 * tw), K);
        group.out = BlockStride::Range(r0 * th, std::min(N, r1 * th), N);
        groups.push_back(group);
        continue;
      }
      // The kept tiles whose column c has c % dp == g: one GEMM.
      const BlockStride in = {g, p.dp, tw, K, 0};
      group.in = in;
      if (shape.diagonal) {
        // (r + c) % dp == b: rows r with r % dp == (b - g) mod dp.
        const int r0 = ((p.b - g) % p.dp + p.dp) % p.dp;
        if (r0 >= R) continue;
        const BlockStride out = {r0, p.dp, th, N, 0};
        group.out = out;
      } else {
        // (r C + c) % dp == b: in tile row r the kept columns are
        // c = g, g + dp, ... with g = (b - r C) mod dp; the rows sharing one
        // g form an arithmetic progression of step dp / gcd(C mod dp, dp).
        const int row_step = p.dp / gcd(C % p.dp, p.dp);
        int r0 = 0;
        while (r0 < std::min(R, row_step) &&
               ((p.b - r0 * C) % p.dp + p.dp) % p.dp != g) {
          ++r0;
        }
        if (r0 >= std::min(R, row_step)) continue;
        const BlockStride out = {r0, row_step, th, N, 0};
        group.out = out;
      }
      groups.push_back(group);
    }
  } else if (shape.input_side) {
    group.out = BlockStride::All(N);
    group.in = KeptUnits(p, shape.block_layout, K);
    groups.push_back(group);
  } else {
    group.out = KeptUnits(p, shape.block_layout, N);
    group.in = propagated ? KeptUnits(input, input_block, K)
                          : BlockStride::All(K);
    groups.push_back(group);
  }
  int x_cols = 0, y_cols = 0, w_off = 0;
  for (ApproxDropoutGroup& g : groups) {
    const int nout = g.out.size(), nin = g.in.size();
    // W[out, in] is a view when its columns are one run and its rows are
    // one run or evenly spaced single rows (leading dimension step K).
    g.w_view = g.in.contiguous() && (g.out.contiguous() || g.out.block == 1);
    g.ldw = !g.w_view ? nin : (g.out.contiguous() ? 1 : g.out.step) * K;
    g.w_view_offset = g.w_view && nout > 0 && nin > 0 ? g.out[0] * K + g.in[0]
                                                      : 0;
    g.x_cols_before = x_cols;
    g.y_cols_before = y_cols;
    g.w_offset = w_off;
    if (!g.in.contiguous()) x_cols += nin;
    if (!g.out.contiguous()) y_cols += nout;
    if (!g.w_view) w_off += nout * nin;
  }
  cls->out_covered = groups.size() == 1 && groups[0].out.all();
  cls->in_covered = groups.size() == 1 && groups[0].in.all();
}

namespace {

// First row of slice s of `slices` even slices of `rows`.
int EvenBegin(int s, int slices, int rows) {
  return static_cast<int>(static_cast<int64_t>(s) * rows / slices);
}

}  // namespace

void ApproxDropoutPlan::Plan(const ApproxDropoutShape& shape, int rows,
    const std::vector<DropoutPattern>& patterns,
    const std::vector<DropoutPattern>* inputs, bool input_block) {
  const int slices = patterns.size();
  bounds_.resize(slices + 1);
  for (int s = 0; s <= slices; ++s) {
    bounds_[s] = slices > 0 ? EvenBegin(s, slices, rows) : 0;
  }
  PlanBounded(shape, patterns, inputs, input_block);
}

void ApproxDropoutPlan::Plan(const ApproxDropoutShape& shape,
    const std::vector<int>& bounds,
    const std::vector<DropoutPattern>& patterns,
    const std::vector<DropoutPattern>* inputs, bool input_block) {
  CHECK_EQ(bounds.size(), patterns.size() + 1) << "approx-dropout plan: "
      << bounds.size() << " slice bounds for " << patterns.size() << " slices";
  bounds_.assign(bounds.begin(), bounds.end());
  PlanBounded(shape, patterns, inputs, input_block);
}

void ApproxDropoutPlan::PlanBounded(const ApproxDropoutShape& shape,
    const std::vector<DropoutPattern>& patterns,
    const std::vector<DropoutPattern>* inputs, bool input_block) {
  CHECK(!patterns.empty()) << "approx-dropout plan: no slice patterns";
  CHECK(inputs == NULL || inputs->size() == patterns.size())
      << "approx-dropout plan: " << inputs->size() << " input patterns for "
      << patterns.size() << " slices";
  const int num_slices = patterns.size();
  num_classes_ = 0;
  compact_weights_ = 0;
  out_covered_ = in_covered_ = true;
  const DropoutPattern none = {1, 0};
  for (int s = 0; s < num_slices; ++s) {
    CHECK_LE(SliceBegin(s), SliceBegin(s + 1)) << "approx-dropout plan: "
        << "slice bounds decrease at slice " << s;
    if (SliceBegin(s + 1) == SliceBegin(s)) continue;
    const DropoutPattern& input = inputs ? (*inputs)[s] : none;
    int c = 0;
    while (c < num_classes_ && !(Same(classes_[c].pattern, patterns[s]) &&
                                 Same(classes_[c].input, input))) {
      ++c;
    }
    if (c < num_classes_) {
      classes_[c].slices.push_back(s);
      continue;
    }
    if (static_cast<int>(classes_.size()) <= num_classes_) {
      classes_.resize(num_classes_ + 1);
    }
    ApproxDropoutClass& cls = classes_[num_classes_++];
    cls.pattern = patterns[s];
    cls.input = input;
    cls.slices.clear();
    cls.slices.push_back(s);
    PlanGroups(shape, cls.pattern, inputs != NULL, input, input_block, &cls);
    cls.w_base = compact_weights_;
    for (const ApproxDropoutGroup& g : cls.groups) {
      if (!g.w_view) compact_weights_ += g.out.size() * g.in.size();
    }
    out_covered_ = out_covered_ && cls.out_covered;
    in_covered_ = in_covered_ && cls.in_covered;
  }
  // Slices with different patterns keep disjoint parts of W, so their
  // gathered parts fit one N x K buffer together.
  CHECK_LE(compact_weights_, static_cast<int64_t>(shape.N) * shape.K)
      << "approx-dropout plan: the slices' patterns overlap";
}

void ApproxDropoutSegments(int rows, const std::vector<DropoutPattern>& own,
                           const std::vector<DropoutPattern>& inputs,
                           std::vector<int>* bounds,
                           std::vector<DropoutPattern>* seg_own,
                           std::vector<DropoutPattern>* seg_inputs) {
  CHECK(!own.empty() && !inputs.empty())
      << "approx-dropout segments: no slice patterns";
  const int S = own.size(), T = inputs.size();
  bounds->assign(1, 0);
  seg_own->clear();
  seg_inputs->clear();
  int s = 0, t = 0, row = 0;
  do {
    // The slices containing `row` (an empty slice is passed over).
    while (s + 1 < S && EvenBegin(s + 1, S, rows) <= row) ++s;
    while (t + 1 < T && EvenBegin(t + 1, T, rows) <= row) ++t;
    const int end = std::min(EvenBegin(s + 1, S, rows),
                             EvenBegin(t + 1, T, rows));
    if (!seg_own->empty() && Same(seg_own->back(), own[s]) &&
        Same(seg_inputs->back(), inputs[t])) {
      bounds->back() = end;
    } else {
      seg_own->push_back(own[s]);
      seg_inputs->push_back(inputs[t]);
      bounds->push_back(end);
    }
    row = end;
  } while (row < rows);
}

}  // namespace caffe
