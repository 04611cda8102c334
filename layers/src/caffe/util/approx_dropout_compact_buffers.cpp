#include <string>
#include <vector>

#include "caffe/util/approx_dropout_compact_buffers.hpp"

namespace caffe {

namespace {

bool SameShape(const ApproxDropoutShape& a, const ApproxDropoutShape& b) {
  return a.N == b.N && a.K == b.K && a.tile == b.tile &&
         a.input_side == b.input_side && a.block_layout == b.block_layout &&
         a.diagonal == b.diagonal &&
         a.tile_blocks == b.tile_blocks && a.tile_height == b.tile_height &&
         a.tile_width == b.tile_width;
}

}  // namespace

template <typename Dtype>
void ApproxDropoutSharedBuffers<Dtype>::Reshape(int y_count,
    const ApproxDropoutShape& layer_shape, const std::string& name) {
  CHECK(!has_shape || SameShape(shape, layer_shape)) << "Layer " << name
      << ": shares compact buffers with a layer of another weight shape or "
      << "pattern layout";
  has_shape = true;
  shape = layer_shape;
  const int w_count = layer_shape.N * layer_shape.K;
  if (y.count() < y_count) y.Reshape(std::vector<int>(1, y_count));
  w.Reshape(std::vector<int>(1, w_count));
  dw.Reshape(std::vector<int>(1, w_count));
  w_holds.clear();
}

template <typename Dtype>
void ApproxDropoutSharedBuffers<Dtype>::GatherWeights(
    const ApproxDropoutOps<Dtype>& ops, const ApproxDropoutPlan& plan,
    const Blob<Dtype>& weights, int K, bool always) {
  bool held = !always && w_holds.size() == 2u * plan.num_classes();
  for (int c = 0; held && c < plan.num_classes(); ++c) {
    held = w_holds[2 * c].dp == plan.cls(c).pattern.dp &&
           w_holds[2 * c].b == plan.cls(c).pattern.b &&
           w_holds[2 * c + 1].dp == plan.cls(c).input.dp &&
           w_holds[2 * c + 1].b == plan.cls(c).input.b;
  }
  if (held) return;
  w_holds.clear();
  const Dtype* src = ops.data(weights);
  for (int c = 0; c < plan.num_classes(); ++c) {
    const ApproxDropoutClass& cls = plan.cls(c);
    for (const ApproxDropoutGroup& g : cls.groups) {
      if (g.w_view) continue;
      Dtype* buf = ops.mutable_data(&w) + cls.w_base + g.w_offset;
      ops.gather(g.out.size(), g.out, g.in, src, K, buf);
    }
    w_holds.push_back(cls.pattern);
    w_holds.push_back(cls.input);
  }
}

INSTANTIATE_CLASS(ApproxDropoutSharedBuffers);

}  // namespace caffe
