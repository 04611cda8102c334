#ifndef CAFFE_UTIL_APPROX_DROPOUT_COMPACT_BUFFERS_HPP_
#define CAFFE_UTIL_APPROX_DROPOUT_COMPACT_BUFFERS_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/util/approx_dropout_ops.hpp"
#include "caffe/util/approx_dropout_plan.hpp"

namespace caffe {

// The compact operands of an ApproxDropoutInnerProduct that several layers
// running one at a time may share (the unrolled steps of an
// ApproxDropoutLSTM, which read one W_hc): y and the weight-gradient scratch,
// used within one pass, and the gathered W, tagged with the (pattern, input)
// of every class it holds, so that a backward pass gathers again only when
// another step's pattern replaced it. Each layer keeps its own compact x,
// which serves its own backward. Sized at their largest (dp = 1); memory is
// taken only when a plan first uses a buffer, never per iteration.
template <typename Dtype>
struct ApproxDropoutSharedBuffers {
  Blob<Dtype> y, w, dw;
  std::vector<DropoutPattern> w_holds;
  // The sharers' one shape and layout: w_holds names patterns, whose groups
  // (hence the gathered W's layout) follow from it.
  bool has_shape;
  ApproxDropoutShape shape;

  ApproxDropoutSharedBuffers() : has_shape(false) {}
  // For a layer `name` of `shape` with a y of y_count values; CHECK-fails if
  // another sharer has another shape or layout (y grows to the largest
  // sharer's batch).
  void Reshape(int y_count, const ApproxDropoutShape& shape,
               const std::string& name);
  // The plan's compact W parts (those not read in place) gathered from
  // weights (K columns), unless w holds them already and !always.
  void GatherWeights(const ApproxDropoutOps<Dtype>& ops,
                     const ApproxDropoutPlan& plan, const Blob<Dtype>& weights,
                     int K, bool always);
};

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_COMPACT_BUFFERS_HPP_
