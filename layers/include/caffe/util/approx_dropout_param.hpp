#ifndef CAFFE_UTIL_APPROX_DROPOUT_PARAM_HPP_
#define CAFFE_UTIL_APPROX_DROPOUT_PARAM_HPP_

#include "caffe/proto/caffe.pb.h"
#include "caffe/util/approx_dropout_plan.hpp"

namespace caffe {

// An ApproxDropoutInnerProduct's settings: the checks that need no data, the
// plan's view of them and the defaults chosen by measurement.

// CHECK-fails, naming the layer and the field, on inner_product_param and
// approx_dropout_param settings the layer refuses (transpose, num_output,
// the LSTM's recurrent fields, batch_slices, TILE's side and tile sizes,
// layout / tile_order with the other pattern). K: the layer's input size.
// The distribution is checked by DropoutPatternSampler.
void CheckApproxDropoutParam(const LayerParameter& layer, int K);

// What the plan needs to know of the layer: W is num_output x K.
ApproxDropoutShape ApproxDropoutShapeOf(const ApproxDropoutParameter& param,
                                        int num_output, int K);

// batch_slices when unset: 4 for TILE in tile_order BLOCKS, 1 for other TILE
// and for ROW dropping outputs at dropout_ratio <= 0.5, else 2 (the
// measurements are in the definition).
int DefaultBatchSlices(const ApproxDropoutParameter& param);

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_PARAM_HPP_
