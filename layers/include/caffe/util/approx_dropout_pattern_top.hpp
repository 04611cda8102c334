#ifndef CAFFE_UTIL_APPROX_DROPOUT_PATTERN_TOP_HPP_
#define CAFFE_UTIL_APPROX_DROPOUT_PATTERN_TOP_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/util/approx_dropout_pattern.hpp"
#include "caffe/util/approx_dropout_plan.hpp"

namespace caffe {

// The pattern-top protocol of pattern propagation. A producer (an
// ApproxDropoutInnerProduct with a second top) writes one row per batch
// slice, (dp, b_s, layout code, units); a consumer reads that blob as its
// second bottom and skips the input columns the producer dropped. Pattern
// tops are registered by their data (which any Split of the blob shares) and
// owned by the layer object that writes them, not its name (names repeat
// across nets), so that a consumer tells a pattern top from any other blob of
// that shape and names its producer in errors.
class ApproxDropoutPatternTop {
 public:
  // A row's columns; the layout code of a layer whose outputs are not
  // dropped (a consumer refuses such a pattern).
  enum { kColumns = 4, kNotDropped = -1 };

  // data holds `layer`'s pattern top now (whoever registered it before).
  static void Register(const void* data, const void* layer,
                       const std::string& name);
  // Drops data's entry if `layer` registered it (the memory may serve
  // another layer's pattern top by now).
  static void Forget(const void* data, const void* layer);
  // The name of the layer whose pattern top data is, or "".
  static std::string Producer(const void* data);

  // Row s: patterns[min(s, last)] ({1, 0} when there are none), the code and
  // the unit count, for every row of top.
  template <typename Dtype>
  static void Write(const std::vector<DropoutPattern>& patterns, int code,
                    int units, Blob<Dtype>* top);
  // Every row's (dp, b).
  template <typename Dtype>
  static void Read(const Blob<Dtype>& bottom,
                   std::vector<DropoutPattern>* patterns);

  // The consumer `name`'s checks of its pattern bottom `blob` (K: its input
  // size; can_consume: it is ROW on the output side). Returns false, with
  // nothing checked but the shape, when the blob is not registered yet and
  // at_setup (a Split's copy shares the producer's data only from the first
  // forward on); else CHECK-fails with the reason or returns true and sets
  // *input_block to the producer's layout.
  template <typename Dtype>
  static bool CheckBottom(const Blob<Dtype>& pattern, const std::string& name,
                          const std::string& blob, bool can_consume, int K,
                          bool at_setup, bool* input_block);
};

// A producer's registration of its pattern top: follows the top's data
// across reshapes and is forgotten with the layer.
class ApproxDropoutPatternTopOwner {
 public:
  explicit ApproxDropoutPatternTopOwner(const void* layer)
      : layer_(layer), data_(NULL) {}
  ~ApproxDropoutPatternTopOwner();
  // One registration, one owner: a copy would forget it twice.
  ApproxDropoutPatternTopOwner(const ApproxDropoutPatternTopOwner&) = delete;
  ApproxDropoutPatternTopOwner& operator=(const ApproxDropoutPatternTopOwner&) =
      delete;
  // Shapes top to slices x kColumns and registers its data for `name`.
  // Returns true when that data is new (a reallocating Reshape replaced it):
  // the caller writes it at once, so that consumers set up next can check
  // the wiring.
  template <typename Dtype>
  bool Reshape(int slices, const std::string& name, Blob<Dtype>* top);

 private:
  const void* layer_;
  const void* data_;
};

// A consumer's side: its pattern bottom's checks and, every iteration, the
// segments of the batch where its own slice patterns and the producer's are
// both constant (the two may cut the batch differently, or run in different
// phases), planned so that wiring never changes what is computed.
class ApproxDropoutPatternBottom {
 public:
  ApproxDropoutPatternBottom()
      : wired_(false), checked_(false), input_block_(false), K_(0),
        can_consume_(false) {}
  // At LayerSetUp of consumer `name` (blob: the bottom's name; K, can_consume
  // as for CheckBottom). A check that needs the producer's data may wait for
  // the first Plan.
  template <typename Dtype>
  void SetUp(const Blob<Dtype>& pattern, const std::string& name,
             const std::string& blob, bool can_consume, int K);
  // This iteration's plan: rows of M, `patterns` the consumer's slices; the
  // producer's rows are read from `pattern`.
  template <typename Dtype>
  void Plan(const Blob<Dtype>& pattern, const ApproxDropoutShape& shape,
            int M, const std::vector<DropoutPattern>& patterns,
            ApproxDropoutPlan* plan);

  bool wired() const { return wired_; }      // SetUp was called
  bool checked() const { return checked_; }  // the producer is known
  // The producer's layout is BLOCK (known once checked()).
  bool input_block() const { return input_block_; }

 private:
  bool wired_, checked_, input_block_;
  std::string name_, blob_;
  int K_;
  bool can_consume_;
  std::vector<DropoutPattern> inputs_, seg_patterns_, seg_inputs_;
  std::vector<int> seg_bounds_;
};

}  // namespace caffe

#endif  // CAFFE_UTIL_APPROX_DROPOUT_PATTERN_TOP_HPP_
