#include <string>

#include "caffe/common.hpp"
#include "caffe/util/approx_dropout_param.hpp"

namespace caffe {

void CheckApproxDropoutParam(const LayerParameter& layer, int K) {
  const InnerProductParameter& ip = layer.inner_product_param();
  const ApproxDropoutParameter& param = layer.approx_dropout_param();
  const std::string& name = layer.name();
  CHECK(!ip.transpose()) << "Layer " << name << ": inner_product_param."
      << "transpose: true is not supported by ApproxDropoutInnerProduct "
      << "(its patterns address rows of a num_output x K weight matrix)";
  const int N = ip.num_output();
  CHECK_GE(N, 1) << "Layer " << name << ": inner_product_param.num_output "
                 << "must be positive";
  const std::string where = "Layer " + name + ": approx_dropout_param.";
  CHECK(!param.has_recurrent_dropout_ratio() &&
        param.recurrent_pattern_distribution_size() == 0 &&
        !param.has_recurrent_pattern()) << where << "recurrent_dropout_ratio, "
      << "recurrent_pattern_distribution and recurrent_pattern apply to "
      << "ApproxDropoutLSTM only";
  CHECK(!param.has_drop_connect_unit()) << where << "drop_connect_unit "
      << "applies to DropConnectInnerProduct only";
  if (param.has_batch_slices()) {
    CHECK_GE(param.batch_slices(), 1) << where << "batch_slices must be >= 1 "
        << "(1 is one pattern for the whole batch), got "
        << param.batch_slices();
    CHECK_LE(param.batch_slices(), 1u << 20) << where << "batch_slices ("
        << param.batch_slices() << ") is absurdly large";
  }
  if (param.pattern() == ApproxDropoutParameter_Pattern_TILE) {
    CHECK(param.side() == ApproxDropoutParameter_Side_OUTPUT) << where
        << "side: INPUT applies to pattern: ROW only (TILE drops weight "
        << "tiles, not a side)";
    CHECK_GE(param.tile_height(), 1) << where << "tile_height must be >= 1";
    CHECK_GE(param.tile_width(), 1) << where << "tile_width must be >= 1";
    CHECK_LE(param.tile_height(), N) << where << "tile_height ("
        << param.tile_height() << ") is larger than the weight matrix's "
        << "num_output (" << N << ")";
    CHECK_LE(param.tile_width(), K) << where << "tile_width ("
        << param.tile_width() << ") is larger than the weight matrix's "
        << "input size K (" << K << ")";
    CHECK(!param.has_layout()) << where << "layout applies to pattern: ROW "
        << "only (TILE keeps tiles, numbered by tile_order)";
  } else {
    CHECK(!param.has_tile_order()) << where << "tile_order applies to "
        << "pattern: TILE only";
  }
}

ApproxDropoutShape ApproxDropoutShapeOf(const ApproxDropoutParameter& param,
                                        int num_output, int K) {
  ApproxDropoutShape shape;
  shape.N = num_output;
  shape.K = K;
  shape.tile = param.pattern() == ApproxDropoutParameter_Pattern_TILE;
  shape.input_side = param.side() == ApproxDropoutParameter_Side_INPUT;
  // Unset: BLOCK, whose kept parts are all views (scripts/results: as
  // accurate as STRIDED, and no gathers).
  shape.block_layout = !param.has_layout() ||
                       param.layout() == ApproxDropoutParameter_Layout_BLOCK;
  shape.diagonal =
      param.tile_order() == ApproxDropoutParameter_TileOrder_DIAGONAL;
  shape.tile_blocks =
      param.tile_order() == ApproxDropoutParameter_TileOrder_BLOCKS;
  shape.tile_height = param.tile_height();
  shape.tile_width = param.tile_width();
  return shape;
}

int DefaultBatchSlices(const ApproxDropoutParameter& param) {
  // Measured (scripts/results): TILE, whose slices each gather their own
  // tiles of W, is fastest with one. ROW dropping outputs: up to p = 0.5 one
  // pattern per batch is as accurate as two slices (Fig. 4, 10 epochs, 3
  // seeds: +0.21 pp at 0.5, -0.08 pp at 0.3) and faster (CaffeNet's fc6 at
  // p = 0.5, dp = 2 only: two slices read all of W; 1.0-1.5x the time of one,
  // fc6_slices); above, two slices keep the accuracy (-1.29 pp with one at
  // 0.7) for ~10 % of the speed. Other ROW layers (side INPUT, ApproxDropout-
  // LSTM's input): two, as measured there.
  // TILE: BLOCKS' slices are views (no gathers); at p = 0.7 after 2 epochs
  // BLOCKS trailed stock by 14.6 pp with one slice and 3.9 pp with four
  // (mlp_rates). The other orders gather per slice (4 slices ran slower than
  // stock on this CPU) and stay at one.
  if (param.pattern() == ApproxDropoutParameter_Pattern_TILE) {
    return param.tile_order() == ApproxDropoutParameter_TileOrder_BLOCKS
        ? 4 : 1;
  }
  if (param.side() == ApproxDropoutParameter_Side_OUTPUT &&
      param.dropout_ratio() <= 0.5f) {
    return 1;
  }
  return 2;
}

}  // namespace caffe
