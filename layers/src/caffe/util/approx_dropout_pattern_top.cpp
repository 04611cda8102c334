#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "boost/thread/mutex.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/util/approx_dropout_pattern_top.hpp"

namespace caffe {

namespace {

struct Owner {
  const void* layer;
  std::string name;
};

boost::mutex registry_mutex;
std::map<const void*, Owner>& Registry() {
  static std::map<const void*, Owner> tops;
  return tops;
}

}  // namespace

void ApproxDropoutPatternTop::Register(const void* data, const void* layer,
                                       const std::string& name) {
  boost::mutex::scoped_lock lock(registry_mutex);
  const Owner owner = {layer, name};
  Registry()[data] = owner;
}

void ApproxDropoutPatternTop::Forget(const void* data, const void* layer) {
  boost::mutex::scoped_lock lock(registry_mutex);
  std::map<const void*, Owner>::iterator it = Registry().find(data);
  if (it != Registry().end() && it->second.layer == layer) {
    Registry().erase(it);
  }
}

std::string ApproxDropoutPatternTop::Producer(const void* data) {
  boost::mutex::scoped_lock lock(registry_mutex);
  std::map<const void*, Owner>::const_iterator it = Registry().find(data);
  return it == Registry().end() ? std::string() : it->second.name;
}

template <typename Dtype>
void ApproxDropoutPatternTop::Write(const std::vector<DropoutPattern>& patterns,
    int code, int units, Blob<Dtype>* top) {
  Dtype* row = top->mutable_cpu_data();
  const int last = static_cast<int>(patterns.size()) - 1;
  for (int s = 0; s < top->shape(0); ++s, row += kColumns) {
    const DropoutPattern p =
        last < 0 ? DropoutPattern{1, 0} : patterns[std::min(s, last)];
    row[0] = p.dp;
    row[1] = p.b;
    row[2] = code;
    row[3] = units;
  }
}

template <typename Dtype>
void ApproxDropoutPatternTop::Read(const Blob<Dtype>& bottom,
                                   std::vector<DropoutPattern>* patterns) {
  const Dtype* row = bottom.cpu_data();
  patterns->resize(bottom.shape(0));
  for (size_t s = 0; s < patterns->size(); ++s, row += kColumns) {
    (*patterns)[s].dp = static_cast<int>(row[0]);
    (*patterns)[s].b = static_cast<int>(row[1]);
  }
}

template <typename Dtype>
bool ApproxDropoutPatternTop::CheckBottom(const Blob<Dtype>& pattern,
    const std::string& name, const std::string& blob, bool can_consume,
    int K, bool at_setup, bool* input_block) {
  CHECK(pattern.num_axes() == 2 && pattern.shape(1) == kColumns)
      << "Layer " << name << ": second bottom '" << blob << "' is not a "
      << "pattern top (the second top of an ApproxDropoutInnerProduct layer)";
  const std::string producer = Producer(pattern.data().get());
  const std::string pair = "Layer " + name + " (pattern bottom '" + blob +
      "' from layer " + (producer.empty() ? "?" : producer) + "): ";
  CHECK(can_consume) << pair << "a pattern bottom needs approx_dropout_param."
      << "pattern: ROW with side: OUTPUT in " << name << " (it skips the "
      << "inputs that its producer dropped)";
  if (producer.empty() && at_setup) return false;
  CHECK(!producer.empty()) << "Layer " << name << ": second bottom '" << blob
      << "' is not a pattern top (the second top of an "
      << "ApproxDropoutInnerProduct layer)";
  const Dtype* row = pattern.cpu_data();
  const int code = static_cast<int>(row[2]);
  CHECK(code == ApproxDropoutParameter_Layout_STRIDED ||
        code == ApproxDropoutParameter_Layout_BLOCK) << pair << producer
      << " does not drop its outputs (ROW side INPUT, TILE and "
      << "dropout_ratio 0 leave no output unit to skip)";
  CHECK_EQ(static_cast<int>(row[3]), K) << pair << producer << " has "
      << static_cast<int>(row[3]) << " output units, but the input size K of "
      << name << " is " << K;
  *input_block = code == ApproxDropoutParameter_Layout_BLOCK;
  return true;
}

ApproxDropoutPatternTopOwner::~ApproxDropoutPatternTopOwner() {
  if (data_ != NULL) ApproxDropoutPatternTop::Forget(data_, layer_);
}

template <typename Dtype>
bool ApproxDropoutPatternTopOwner::Reshape(int slices, const std::string& name,
                                           Blob<Dtype>* top) {
  top->Reshape(std::vector<int>{slices, ApproxDropoutPatternTop::kColumns});
  // Registered by its data, which a reallocating Reshape replaces.
  const void* data = top->data().get();
  if (data == data_) return false;
  if (data_ != NULL) ApproxDropoutPatternTop::Forget(data_, layer_);
  data_ = data;
  ApproxDropoutPatternTop::Register(data, layer_, name);
  return true;
}

template <typename Dtype>
void ApproxDropoutPatternBottom::SetUp(const Blob<Dtype>& pattern,
    const std::string& name, const std::string& blob, bool can_consume,
    int K) {
  wired_ = true;
  name_ = name;
  blob_ = blob;
  can_consume_ = can_consume;
  K_ = K;
  checked_ = ApproxDropoutPatternTop::CheckBottom(pattern, name, blob,
      can_consume, K, true, &input_block_);
}

template <typename Dtype>
void ApproxDropoutPatternBottom::Plan(const Blob<Dtype>& pattern,
    const ApproxDropoutShape& shape, int M,
    const std::vector<DropoutPattern>& patterns, ApproxDropoutPlan* plan) {
  if (!checked_) {
    checked_ = ApproxDropoutPatternTop::CheckBottom(pattern, name_, blob_,
        can_consume_, K_, false, &input_block_);
  }
  // One row per producer slice (dp = 1 in its TEST phase).
  ApproxDropoutPatternTop::Read(pattern, &inputs_);
  ApproxDropoutSegments(M, patterns, inputs_, &seg_bounds_, &seg_patterns_,
                        &seg_inputs_);
  plan->Plan(shape, seg_bounds_, seg_patterns_, &seg_inputs_, input_block_);
}

#define INSTANTIATE_PATTERN_TOP(Dtype)                                        \
  template void ApproxDropoutPatternTop::Write<Dtype>(                        \
      const std::vector<DropoutPattern>&, int, int, Blob<Dtype>*);            \
  template void ApproxDropoutPatternTop::Read<Dtype>(                         \
      const Blob<Dtype>&, std::vector<DropoutPattern>*);                      \
  template bool ApproxDropoutPatternTop::CheckBottom<Dtype>(                  \
      const Blob<Dtype>&, const std::string&, const std::string&, bool, int,  \
      bool, bool*);                                                          \
  template bool ApproxDropoutPatternTopOwner::Reshape<Dtype>(                 \
      int, const std::string&, Blob<Dtype>*);                                 \
  template void ApproxDropoutPatternBottom::SetUp<Dtype>(                     \
      const Blob<Dtype>&, const std::string&, const std::string&, bool, int); \
  template void ApproxDropoutPatternBottom::Plan<Dtype>(const Blob<Dtype>&,   \
      const ApproxDropoutShape&, int, const std::vector<DropoutPattern>&,     \
      ApproxDropoutPlan*);
INSTANTIATE_PATTERN_TOP(float)
INSTANTIATE_PATTERN_TOP(double)

}  // namespace caffe
