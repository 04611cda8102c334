#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

#include "caffe/common.hpp"
#include "caffe/sgd_solvers.hpp"
#include "caffe/util/approx_dropout_lazy_update.hpp"
#include "caffe/util/io.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

// The deferred ("lazy") update against Caffe's own (update: STOCK) on the same
// nets with the same seed: after hundreds of iterations of one Step, with
// TEST passes, snapshots and restores, the weights, histories, losses and
// test outputs agree up to rounding; the fallbacks and stock nets are
// bit-identical; and the lazy update really defers.

// The deferred update of any SGD-family solver (a protected member of
// SGDSolver, reached through a member pointer; never instantiated).
template <typename Dtype>
struct LazyOf : SGDSolver<Dtype> {
  static const ApproxDropoutLazyUpdate<Dtype>* Get(SGDSolver<Dtype>* solver) {
    return (solver->*(&LazyOf::lazy_update_)).get();
  }
};

// An SGD solver whose ApplyUpdate can be called by hand, as pycaffe's
// apply_update does in upstream Caffe.
template <typename Dtype>
class ByHandSolver : public SGDSolver<Dtype> {
 public:
  explicit ByHandSolver(const SolverParameter& param)
      : SGDSolver<Dtype>(param) {}
  using SGDSolver<Dtype>::ApplyUpdate;
};

template <typename TypeParam>
class ApproxDropoutLazyUpdateTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  // Per-element tolerance relative to the blob's largest magnitude: rounding
  // differs (one product instead of k steps), nothing else may.
  double Tolerance() const { return sizeof(Dtype) == 4 ? 1e-5 : 1e-12; }

  // x (16 x 20) -> fc1 (300, p = 0.7) -> TanH -> fc2 (260, p = 0.5, its
  // inputs propagated from fc1) -> TanH -> fc3 (5, skips fc2's dropped
  // inputs) -> Euclidean loss against a random target. Cells: fc1 rows in
  // threes (BLOCK edges at 100 and 200 cut them), fc2 3 x 3. TanH, not ReLU:
  // now and then a ReLU input lies within rounding of 0, and the two updates'
  // float rounding then picks different subgradients (a real difference of a
  // few percent in a weight, seen once in 200 float iterations); tanh(0) = 0
  // keeps the dropped units zero for the next layer all the same.
  static std::string MlpNet(const std::string& fc1_extra = "",
                            const std::string& fc2_extra = "",
                            bool propagate = true) {
    const std::string filler =
        "weight_filler { type: 'gaussian' std: 0.05 } "
        "bias_filler { type: 'constant' value: 0.1 } ";
    return
        "name: 'mlp' "
        "layer { name: 'data' type: 'DummyData' top: 'data' top: 'target' "
        "  dummy_data_param { shape { dim: 16 dim: 20 } "
        "    shape { dim: 16 dim: 5 } "
        "    data_filler { type: 'gaussian' std: 1 } "
        "    data_filler { type: 'gaussian' std: 1 } } } "
        "layer { name: 'fc1' type: 'ApproxDropoutInnerProduct' bottom: 'data' "
        "  top: 'fc1' " + std::string(propagate ? "top: 'fc1_pattern' " : "") +
        "  inner_product_param { num_output: 300 " + filler + "} "
        "  approx_dropout_param { dropout_ratio: 0.7 " + fc1_extra + "} } "
        "layer { name: 'act1' type: 'TanH' bottom: 'fc1' top: 'fc1' } "
        "layer { name: 'fc2' type: 'ApproxDropoutInnerProduct' bottom: 'fc1' " +
        std::string(propagate ? "bottom: 'fc1_pattern' " : "") + "top: 'fc2' " +
        std::string(propagate ? "top: 'fc2_pattern' " : "") +
        "  inner_product_param { num_output: 260 " + filler + "} "
        "  approx_dropout_param { dropout_ratio: 0.5 " + fc2_extra + "} } "
        "layer { name: 'act2' type: 'TanH' bottom: 'fc2' top: 'fc2' } "
        "layer { name: 'fc3' type: 'ApproxDropoutInnerProduct' bottom: 'fc2' " +
        std::string(propagate ? "bottom: 'fc2_pattern' " : "") +
        "  top: 'fc3' inner_product_param { num_output: 5 " + filler + "} "
        "  approx_dropout_param { dropout_ratio: 0 } } "
        "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'fc3' "
        "  bottom: 'target' top: 'loss' } ";
  }

  // SGD with momentum, L2 decay and the step lr policy; `extra` overrides.
  SolverParameter Param(const std::string& net, const std::string& update,
                        const std::string& extra = "") {
    SolverParameter param;
    const std::string text =
        "net_param { " + net + " } base_lr: 0.01 momentum: 0.9 "
        "weight_decay: 0.01 lr_policy: 'step' gamma: 0.5 stepsize: 70 "
        "max_iter: 1000 display: 0 random_seed: 1701 snapshot_after_train: "
        "false snapshot_prefix: '" + snapshot_prefix_ + "' "
        "approx_dropout_param { update: " + update + " } ";
    CHECK(google::protobuf::TextFormat::ParseFromString(text, &param)) << text;
    CHECK(google::protobuf::TextFormat::MergeFromString(extra, &param))
        << extra;
    param.set_solver_mode(Caffe::mode() == Caffe::GPU ? SolverParameter::GPU
                                                      : SolverParameter::CPU);
    return param;
  }

  virtual void SetUp() {
    MakeTempFilename(&snapshot_prefix_);
  }

  // Every learnable weight and history blob, and the train net's outputs,
  // each compared on its own scale.
  typedef std::vector<std::vector<Dtype> > State_;
  static State_ State(SGDSolver<Dtype>* solver) {
    State_ out;
    const std::vector<Blob<Dtype>*>& params = solver->net()->learnable_params();
    for (size_t i = 0; i < params.size(); ++i) {
      const Dtype* w = params[i]->cpu_data();
      out.push_back(std::vector<Dtype>(w, w + params[i]->count()));
      const Dtype* h = solver->history()[i]->cpu_data();
      out.push_back(std::vector<Dtype>(h, h + params[i]->count()));
    }
    const std::vector<Blob<Dtype>*>& outputs = solver->net()->output_blobs();
    for (size_t i = 0; i < outputs.size(); ++i) {
      out.push_back(std::vector<Dtype>(outputs[i]->cpu_data(),
          outputs[i]->cpu_data() + outputs[i]->count()));
    }
    return out;
  }

  void ExpectClose(const State_& lazy, const State_& stock,
                   const std::string& what) {
    ASSERT_EQ(lazy.size(), stock.size()) << what;
    for (size_t b = 0; b < stock.size(); ++b) {
      std::ostringstream blob;
      blob << what << ", blob " << b;
      ExpectClose(lazy[b], stock[b], blob.str());
    }
  }

  void ExpectClose(const std::vector<Dtype>& lazy,
                   const std::vector<Dtype>& stock, const std::string& what) {
    ASSERT_EQ(lazy.size(), stock.size()) << what;
    double scale = 0;
    for (size_t i = 0; i < stock.size(); ++i) {
      // The premise: training converges (a diverged run compares noise).
      ASSERT_TRUE(std::isfinite(lazy[i]) && std::isfinite(stock[i])) << what;
      scale = std::max(scale, std::fabs(static_cast<double>(stock[i])));
    }
    ASSERT_LT(scale, 100) << what << ": the training diverged";
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < stock.size(); ++i) {
      const double d = std::fabs(static_cast<double>(lazy[i]) - stock[i]);
      if (d > worst) {
        worst = d;
        at = i;
      }
    }
    EXPECT_LE(worst, Tolerance() * scale)
        << what << ": entry " << at << " is " << lazy[at] << " lazily and "
        << stock[at] << " with Caffe's update (scale " << scale << ")";
  }

  static void ExpectIdentical(const State_& a, const State_& b,
                              const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t k = 0; k < a.size(); ++k) {
      ASSERT_EQ(a[k].size(), b[k].size()) << what;
      for (size_t i = 0; i < a[k].size(); ++i) {
        ASSERT_TRUE(std::isfinite(a[k][i])) << what << ": training diverged";
      }
      EXPECT_EQ(0, std::memcmp(a[k].data(), b[k].data(),
                               a[k].size() * sizeof(Dtype)))
          << what << ", blob " << k << ": not bit-identical to Caffe's update";
    }
  }

  // Trains `iters` iterations in one Step from the same seed with Caffe's
  // update and with `update`, checking the loss every `every` iterations.
  void Compare(const std::string& net, const std::string& extra, int iters,
               const std::string& update = "AUTO", int every = 0) {
    Caffe::set_random_seed(1701);
    SGDSolver<Dtype> stock(Param(net, "STOCK", extra));
    Caffe::set_random_seed(1701);
    SGDSolver<Dtype> lazy(Param(net, update, extra));
    const int chunk = every > 0 ? every : iters;
    for (int done = 0; done < iters; done += chunk) {
      StepSeeded(&stock, chunk, done);
      StepSeeded(&lazy, chunk, done);
      std::ostringstream what;
      what << "after " << done + chunk << " iterations";
      ExpectClose(State(&lazy), State(&stock), what.str());
    }
    const ApproxDropoutLazyUpdate<Dtype>* u = LazyOf<Dtype>::Get(&lazy);
    ASSERT_TRUE(u != NULL);
    EXPECT_EQ(u->mode(), update == "FUSED"
              ? ApproxDropoutLazyUpdate<Dtype>::FUSED
              : ApproxDropoutLazyUpdate<Dtype>::LAZY) << u->reason();
  }

  // Caffe's RNG is global: each solver's Step starts from the same seed.
  static void StepSeeded(caffe::Solver<Dtype>* solver, int iters, int seed) {
    Caffe::set_random_seed(seed);
    solver->Step(iters);
  }

  std::string snapshot_prefix_;
};

TYPED_TEST_CASE(ApproxDropoutLazyUpdateTest, TestDtypesAndDevices);

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestPropagatedMlpEqualsStock) {
  typedef typename TypeParam::Dtype Dtype;
  // 240 iterations in one Step, the step lr policy halving the rate three
  // times; checked once at the end (no Step boundary in between).
  this->Compare(this->MlpNet(), "", 240);
  // The update did defer: it stepped a fraction of what the dense update
  // steps, and brought up to date less than the rest.
  Caffe::set_random_seed(1701);
  SGDSolver<Dtype> lazy(this->Param(this->MlpNet(), "AUTO"));
  lazy.Step(100);
  const ApproxDropoutLazyUpdate<Dtype>* u = LazyOf<Dtype>::Get(&lazy);
  ASSERT_EQ(u->mode(), ApproxDropoutLazyUpdate<Dtype>::LAZY);
  ASSERT_EQ(u->lazy_params().size(), 6u);  // 3 weights, 3 biases
  double total = 0;
  for (size_t i = 0; i < lazy.net()->learnable_params().size(); ++i) {
    total += lazy.net()->learnable_params()[i]->count();
  }
  EXPECT_LT(u->stepped_entries(), 0.75 * 100 * total);
  EXPECT_LT(u->stepped_entries() + u->caught_up_entries(), 100 * total);
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestRateLogRestarts) {
  // 1100 iterations in one Step: the log of rates restarts after 1000 (all
  // cells brought up to date first), catch-ups span up to 1000 iterations.
  this->Compare(this->MlpNet(), "stepsize: 400", 1100);
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestLossesEveryTenIterations) {
  // Step(10) 24 times: each Step starts and ends the deferral.
  this->Compare(this->MlpNet(), "", 240, "AUTO", 10);
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestNesterov) {
  typedef typename TypeParam::Dtype Dtype;
  const std::string net = this->MlpNet();
  Caffe::set_random_seed(1701);
  NesterovSolver<Dtype> stock(this->Param(net, "STOCK", "type: 'Nesterov'"));
  stock.Step(200);
  Caffe::set_random_seed(1701);
  NesterovSolver<Dtype> lazy(
      this->Param(net, "AUTO", "type: 'Nesterov'"));
  lazy.Step(200);
  ASSERT_EQ(LazyOf<Dtype>::Get(&lazy)->mode(), ApproxDropoutLazyUpdate<Dtype>::LAZY);
  this->ExpectClose(this->State(&lazy), this->State(&stock), "Nesterov");
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestLayoutsPatternsAndSlices) {
  // STRIDED (single-unit cells), three slices, side INPUT, TILE, unwired.
  this->Compare(this->MlpNet("layout: STRIDED", "layout: STRIDED"), "", 200);
  this->Compare(this->MlpNet("batch_slices: 3"), "", 200);
  this->Compare(this->MlpNet("", "side: INPUT", false), "", 200);
  // TILE: DIAGONAL (the default) and BLOCKS (4 slices)
  this->Compare(this->MlpNet("pattern: TILE tile_height: 8 tile_width: 4",
                             "pattern: TILE tile_height: 16 tile_width: 16",
                             false), "", 200);
  this->Compare(this->MlpNet("pattern: TILE tile_height: 8 tile_width: 4 "
                             "tile_order: BLOCKS",
                             "pattern: TILE tile_height: 16 tile_width: 16 "
                             "tile_order: BLOCKS", false), "", 200);
  this->Compare(this->MlpNet("batch_slices: 1", "batch_slices: 1", false), "",
                200);
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestLrMultAndDecayMult) {
  // fc2's weights at twice the rate and no decay, its bias frozen.
  std::string net = this->MlpNet();
  const std::string fc2 = "inner_product_param { num_output: 260";
  net.replace(net.find(fc2), fc2.size(),
              "param { lr_mult: 2 decay_mult: 0 } param { lr_mult: 0 } " + fc2);
  this->Compare(net, "", 200);
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestSharedParameters) {
  typedef typename TypeParam::Dtype Dtype;
  // fc2a and fc2b share their weights and bias, with their own patterns
  // (output rows, one slice; input columns), so that cells go stale; their
  // outputs are summed.
  const std::string filler = "weight_filler { type: 'gaussian' std: 0.05 } ";
  const std::string net =
      "layer { name: 'data' type: 'DummyData' top: 'data' top: 'target' "
      "  dummy_data_param { shape { dim: 16 dim: 20 } shape { dim: 16 dim: 5 } "
      "  data_filler { type: 'gaussian' std: 1 } "
      "  data_filler { type: 'gaussian' std: 1 } } } "
      "layer { name: 'fc1' type: 'ApproxDropoutInnerProduct' bottom: 'data' "
      "  top: 'fc1' inner_product_param { num_output: 64 " + filler + "} "
      "  approx_dropout_param { dropout_ratio: 0.7 } } "
      "layer { name: 'fc2a' type: 'ApproxDropoutInnerProduct' bottom: 'fc1' "
      "  top: 'fc2a' param { name: 'w2' } param { name: 'b2' } "
      "  inner_product_param { num_output: 48 " + filler + "} "
      "  approx_dropout_param { dropout_ratio: 0.7 batch_slices: 1 } } "
      "layer { name: 'fc2b' type: 'ApproxDropoutInnerProduct' bottom: 'fc1' "
      "  top: 'fc2b' param { name: 'w2' } param { name: 'b2' } "
      "  inner_product_param { num_output: 48 " + filler + "} "
      "  approx_dropout_param { dropout_ratio: 0.7 side: INPUT } } "
      "layer { name: 'sum' type: 'Eltwise' bottom: 'fc2a' bottom: 'fc2b' "
      "  top: 'fc2' } "
      "layer { name: 'fc3' type: 'InnerProduct' bottom: 'fc2' top: 'fc3' "
      "  inner_product_param { num_output: 5 " + filler + "} } "
      "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'fc3' "
      "  bottom: 'target' top: 'loss' } ";
  this->Compare(net, "", 200);
  // A weight shared with a stock InnerProduct takes the fused pass.
  std::string mixed = net;
  const std::string b = "name: 'fc2b' type: 'ApproxDropoutInnerProduct'";
  mixed.replace(mixed.find(b), b.size(), "name: 'fc2b' type: 'InnerProduct'");
  const std::string side = "approx_dropout_param { dropout_ratio: 0.7 side: "
                           "INPUT }";
  mixed.replace(mixed.find(side), side.size(), "");
  this->Compare(mixed, "", 200);
  Caffe::set_random_seed(1701);
  SGDSolver<Dtype> lazy(this->Param(mixed, "AUTO"));
  lazy.Step(1);
  // fc1's weights and bias deferred; w2, b2 and fc3's in the fused pass.
  EXPECT_EQ(LazyOf<Dtype>::Get(&lazy)->lazy_params().size(), 2u);
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestTestPassAndSnapshotInsideStep) {
  typedef typename TypeParam::Dtype Dtype;
  const std::string net = this->MlpNet();
  // TEST passes at 40, 80 and 120 and a snapshot at 100, inside one Step.
  const std::string extra = "test_iter: 2 test_interval: 40 snapshot: 100";
  const std::string stock_prefix = this->snapshot_prefix_ + "_stock";
  const std::string lazy_prefix = this->snapshot_prefix_ + "_lazy";
  Caffe::set_random_seed(1701);
  SolverParameter stock_param = this->Param(net, "STOCK", extra);
  stock_param.set_snapshot_prefix(stock_prefix);
  SGDSolver<Dtype> stock(stock_param);
  stock.Step(130);
  Caffe::set_random_seed(1701);
  SolverParameter lazy_param = this->Param(net, "AUTO", extra);
  lazy_param.set_snapshot_prefix(lazy_prefix);
  SGDSolver<Dtype> lazy(lazy_param);
  lazy.Step(130);
  this->ExpectClose(this->State(&lazy), this->State(&stock), "after 130");
  // The test net's last outputs (the TEST pass at 120) saw current weights.
  const std::vector<Blob<Dtype>*>& ts = stock.test_nets()[0]->output_blobs();
  const std::vector<Blob<Dtype>*>& tl = lazy.test_nets()[0]->output_blobs();
  std::vector<Dtype> a(ts[0]->cpu_data(), ts[0]->cpu_data() + ts[0]->count());
  std::vector<Dtype> b(tl[0]->cpu_data(), tl[0]->cpu_data() + tl[0]->count());
  this->ExpectClose(b, a, "TEST pass at iteration 120");
  // Both snapshots at 100, restored into fresh solvers, hold the same state;
  // then both train on from 100 with the same new seed.
  Caffe::set_random_seed(5);
  SGDSolver<Dtype> stock2(this->Param(net, "STOCK", extra));
  stock2.Restore((stock_prefix + "_iter_100.solverstate").c_str());
  Caffe::set_random_seed(5);
  SGDSolver<Dtype> lazy2(this->Param(net, "AUTO", extra));
  lazy2.Restore((lazy_prefix + "_iter_100.solverstate").c_str());
  EXPECT_EQ(lazy2.iter(), 100);
  this->ExpectClose(this->State(&lazy2), this->State(&stock2),
                    "snapshots at 100");
  this->StepSeeded(&stock2, 100, 5);
  this->StepSeeded(&lazy2, 100, 5);
  this->ExpectClose(this->State(&lazy2), this->State(&stock2),
                    "restored at 100, trained to 200");
  for (const char* ext : {".caffemodel", ".solverstate"}) {
    for (const std::string& prefix : {stock_prefix, lazy_prefix}) {
      std::remove((prefix + "_iter_100" + ext).c_str());
    }
    std::remove((this->snapshot_prefix_ + "_iter_200" + ext).c_str());
  }
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestFusedUpdate) {
  // Every parameter in one fused pass, nothing deferred.
  this->Compare(this->MlpNet(), "", 120, "FUSED");
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestRecurrentSharedWeights) {
  typedef typename TypeParam::Dtype Dtype;
  // ApproxDropoutLSTM shares W_hc across its unrolled steps: its parameters
  // take the fused pass; the InnerProduct after it is deferred.
  const std::string net =
      "layer { name: 'data' type: 'DummyData' top: 'x' top: 'cont' "
      "  top: 'target' dummy_data_param { shape { dim: 5 dim: 3 dim: 8 } "
      "  shape { dim: 5 dim: 3 } shape { dim: 5 dim: 3 dim: 4 } "
      "  data_filler { type: 'gaussian' std: 1 } "
      "  data_filler { type: 'constant' value: 1 } "
      "  data_filler { type: 'gaussian' std: 1 } } } "
      "layer { name: 'lstm' type: 'ApproxDropoutLSTM' bottom: 'x' "
      "  bottom: 'cont' top: 'h' recurrent_param { num_output: 12 "
      "  weight_filler { type: 'uniform' min: -0.2 max: 0.2 } } "
      "  approx_dropout_param { dropout_ratio: 0.5 "
      "  recurrent_dropout_ratio: 0.5 } } "
      "layer { name: 'fc' type: 'ApproxDropoutInnerProduct' bottom: 'h' "
      "  top: 'y' inner_product_param { num_output: 4 axis: 2 "
      "  weight_filler { type: 'gaussian' std: 0.05 } } "
      "  approx_dropout_param { dropout_ratio: 0.7 side: INPUT } } "
      "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'y' "
      "  bottom: 'target' top: 'loss' } ";
  this->Compare(net, "", 200);
  Caffe::set_random_seed(1701);
  SGDSolver<Dtype> lazy(this->Param(net, "AUTO"));
  lazy.Step(1);
  EXPECT_EQ(LazyOf<Dtype>::Get(&lazy)->lazy_params().size(), 2u);  // fc's weights, bias
}

// Caffe's own update, bit for bit, wherever deferring is not exact or not
// wanted, and for nets without approximate dropout layers.
TYPED_TEST(ApproxDropoutLazyUpdateTest, TestFallbacksAreBitIdentical) {
  typedef typename TypeParam::Dtype Dtype;
  const std::string net = this->MlpNet();
  struct Case {
    const char* extra;
    const char* reason;
  };
  const Case cases[] = {
      {"type: 'Adam' momentum2: 0.999", "solver type Adam"},
      {"type: 'AdaGrad' momentum: 0", "solver type AdaGrad"},
      {"type: 'RMSProp' momentum: 0 rms_decay: 0.9", "solver type RMSProp"},
      {"type: 'AdaDelta' momentum: 0.95 base_lr: 1", "solver type AdaDelta"},
      {"regularization_type: 'L1'", "regularization_type L1"},
      {"clip_gradients: 0.5", "clip_gradients"},
      {"iter_size: 2", "iter_size > 1"},
      {"debug_info: true", "debug_info"},
      {"snapshot_diff: true", "snapshot_diff"},
  };
  for (const Case& c : cases) {
    Caffe::set_random_seed(1701);
    shared_ptr<caffe::Solver<Dtype> > stock(SolverRegistry<Dtype>::
        CreateSolver(this->Param(net, "STOCK", c.extra)));
    stock->Step(30);
    Caffe::set_random_seed(1701);
    shared_ptr<caffe::Solver<Dtype> > auto_solver(SolverRegistry<Dtype>::
        CreateSolver(this->Param(net, "AUTO", c.extra)));
    auto_solver->Step(30);
    SGDSolver<Dtype>* s = dynamic_cast<SGDSolver<Dtype>*>(stock.get());
    SGDSolver<Dtype>* a = dynamic_cast<SGDSolver<Dtype>*>(auto_solver.get());
    ASSERT_TRUE(s && a);
    this->ExpectIdentical(this->State(a), this->State(s), c.extra);
    const ApproxDropoutLazyUpdate<Dtype>* u = LazyOf<Dtype>::Get(a);
    ASSERT_TRUE(u != NULL) << c.extra;
    EXPECT_EQ(u->mode(), ApproxDropoutLazyUpdate<Dtype>::STOCK) << c.extra;
    EXPECT_NE(u->reason().find(c.reason), std::string::npos)
        << c.extra << ": " << u->reason();
  }
  // A stock net (InnerProduct + ReLU + Dropout) under AUTO.
  const std::string stock_net =
      "layer { name: 'data' type: 'DummyData' top: 'data' top: 'target' "
      "  dummy_data_param { shape { dim: 16 dim: 20 } shape { dim: 16 dim: 5 } "
      "  data_filler { type: 'gaussian' std: 1 } "
      "  data_filler { type: 'gaussian' std: 1 } } } "
      "layer { name: 'fc1' type: 'InnerProduct' bottom: 'data' top: 'fc1' "
      "  inner_product_param { num_output: 64 "
      "  weight_filler { type: 'gaussian' std: 0.05 } } } "
      "layer { name: 'act1' type: 'TanH' bottom: 'fc1' top: 'fc1' } "
      "layer { name: 'drop1' type: 'Dropout' bottom: 'fc1' top: 'fc1' "
      "  dropout_param { dropout_ratio: 0.5 } } "
      "layer { name: 'fc2' type: 'InnerProduct' bottom: 'fc1' top: 'fc2' "
      "  inner_product_param { num_output: 5 "
      "  weight_filler { type: 'gaussian' std: 0.05 } } } "
      "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'fc2' "
      "  bottom: 'target' top: 'loss' } ";
  for (const char* type : {"SGD", "Nesterov"}) {
    const std::string extra = std::string("type: '") + type + "'";
    Caffe::set_random_seed(1701);
    shared_ptr<caffe::Solver<Dtype> > stock(SolverRegistry<Dtype>::
        CreateSolver(this->Param(stock_net, "STOCK", extra)));
    stock->Step(50);
    Caffe::set_random_seed(1701);
    shared_ptr<caffe::Solver<Dtype> > auto_solver(SolverRegistry<Dtype>::
        CreateSolver(this->Param(stock_net, "AUTO", extra)));
    auto_solver->Step(50);
    this->ExpectIdentical(
        this->State(dynamic_cast<SGDSolver<Dtype>*>(auto_solver.get())),
        this->State(dynamic_cast<SGDSolver<Dtype>*>(stock.get())),
        "stock net, " + extra);
  }
  // ... and FUSED on it: the fused pass alone, equal up to rounding.
  this->Compare(stock_net, "", 100, "FUSED");
}

TYPED_TEST(ApproxDropoutLazyUpdateTest, TestApplyUpdateOutsideStep) {
  typedef typename TypeParam::Dtype Dtype;
  // ForwardBackward + ApplyUpdate by hand (as upstream pycaffe's
  // apply_update does) never defers: from the same state, bit for bit
  // Caffe's update, even after a Step has created the deferred update.
  const std::string net = this->MlpNet();
  Caffe::set_random_seed(1701);
  ByHandSolver<Dtype> stock(this->Param(net, "STOCK"));
  Caffe::set_random_seed(1701);
  ByHandSolver<Dtype> lazy(this->Param(net, "AUTO"));
  this->StepSeeded(&lazy, 5, 1);
  ASSERT_EQ(LazyOf<Dtype>::Get(&lazy)->mode(),
            ApproxDropoutLazyUpdate<Dtype>::LAZY);
  this->StepSeeded(&stock, 5, 1);
  for (size_t i = 0; i < stock.net()->learnable_params().size(); ++i) {
    lazy.net()->learnable_params()[i]->CopyFrom(
        *stock.net()->learnable_params()[i]);
    lazy.history()[i]->CopyFrom(*stock.history()[i]);
  }
  for (int i = 0; i < 3; ++i) {
    for (ByHandSolver<Dtype>* solver : {&stock, &lazy}) {
      Caffe::set_random_seed(i);
      solver->net()->ClearParamDiffs();
      solver->net()->ForwardBackward();
      solver->ApplyUpdate();
    }
    this->ExpectIdentical(this->State(&lazy), this->State(&stock), "by hand");
  }
}

}  // namespace caffe
