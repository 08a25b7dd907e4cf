// The epilogue fusion passes run on the CPU: they only rewrite graphs.
#include "builder/fuse_conv_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "builder/lower.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln::builder {
namespace {

using kiln::testing::RandomTensor;

constexpr int kOpset = 17;

ir::Value* Input(ir::Graph& g, const std::string& name, std::vector<int64_t> dims) {
  ir::Value* v = g.AddValue(name, {DType::kFloat32, ir::ShapeFromDims(dims)});
  v->is_graph_input = true;
  g.inputs().push_back(v);
  return v;
}

ir::Value* Const(ir::Graph& g, const std::string& name, Tensor t) { return g.AddConstant(name, t); }

ir::Node* Op(ir::Graph& g, const std::string& op, std::vector<ir::Value*> inputs,
             const std::string& out_name, ir::Attributes attrs = {}) {
  ir::Value* out = g.AddValue(out_name);
  ir::Node* node = g.AddNode(op, out_name + "_" + op, std::move(inputs), {out});
  node->attrs = std::move(attrs);
  node->opset = kOpset;
  return node;
}

ir::Value* Out(ir::Node* n) { return n->outputs[0]; }

std::vector<std::string> OpTypes(const ir::Graph& g) {
  std::vector<std::string> ops;
  for (const auto& n : g.nodes()) ops.push_back(n->op_type);
  return ops;
}

const ir::Node* FindOp(const ir::Graph& g, const std::string& op) {
  for (const auto& n : g.nodes())
    if (n->op_type == op) return n.get();
  return nullptr;
}

int IndexOf(const ir::Graph& g, const ir::Node* node) {
  for (size_t i = 0; i < g.nodes().size(); ++i)
    if (g.nodes()[i].get() == node) return static_cast<int>(i);
  return -1;
}

// A graph with Conv(x[1,4,6,6], w[8,4,3,3], b[8], pads 1) -> "conv".
struct ConvGraph {
  ir::Graph g;
  ir::Value* x = nullptr;
  ir::Value* w = nullptr;
  ir::Value* b = nullptr;
  ir::Node* conv = nullptr;

  explicit ConvGraph(bool with_bias = true) {
    g.opset_version = kOpset;
    x = Input(g, "x", {1, 4, 6, 6});
    w = Const(g, "w", RandomTensor({8, 4, 3, 3}, -1, 1, 2));
    std::vector<ir::Value*> inputs = {x, w};
    if (with_bias) {
      b = Const(g, "b", RandomTensor({8}, -1, 1, 3));
      inputs.push_back(b);
    }
    ir::Attributes attrs;
    attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
    conv = Op(g, "Conv", inputs, "conv", attrs);
  }
  void Finish(ir::Value* output) {
    g.outputs().push_back(output);
    passes::InferShapes(g);
  }
};

TEST(FuseConvEpilogues, ResidualAddRelu) {
  ConvGraph cg;
  ir::Value* z = Input(cg.g, "z", {1, 8, 6, 6});
  ir::Node* add = Op(cg.g, "Add", {Out(cg.conv), z}, "add");
  ir::Node* relu = Op(cg.g, "Relu", {Out(add)}, "relu");
  cg.Finish(Out(relu));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
  EXPECT_EQ(OpTypes(cg.g), std::vector<std::string>{"KilnConv"});
  const ir::Node* fused = FindOp(cg.g, "KilnConv");
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(fused->name, "conv_Conv");
  ASSERT_EQ(fused->inputs.size(), 4u);
  EXPECT_EQ(fused->inputs[0], cg.x);
  EXPECT_EQ(fused->inputs[1], cg.w);
  EXPECT_EQ(fused->inputs[2], cg.b);
  EXPECT_EQ(fused->inputs[3], z);
  EXPECT_EQ(fused->outputs[0]->name, "relu");
  EXPECT_EQ(fused->attrs.GetString("activation"), "Relu");
  EXPECT_EQ(fused->attrs.GetInts("pads"), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_NO_THROW(cg.g.Validate());
  // Idempotent.
  EXPECT_EQ(FuseConvEpilogues(cg.g), 0);
}

TEST(FuseConvEpilogues, ResidualFromLaterBranchStaysSorted) {
  ConvGraph cg;
  // The residual is computed by nodes added after the conv; the Add reads
  // the residual first.
  ir::Node* other = Op(cg.g, "Sigmoid", {cg.x}, "other");
  ir::Node* tile = Op(cg.g, "Concat", {Out(other), Out(other)}, "tile",
                      [] {
                        ir::Attributes a;
                        a.set("axis", int64_t{1});
                        return a;
                      }());
  ir::Node* add = Op(cg.g, "Add", {Out(tile), Out(cg.conv)}, "add");
  cg.Finish(Out(add));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
  const ir::Node* fused = FindOp(cg.g, "KilnConv");
  ASSERT_NE(fused, nullptr);
  ASSERT_EQ(fused->inputs.size(), 4u);
  EXPECT_EQ(fused->inputs[3], Out(tile));
  EXPECT_EQ(fused->attrs.GetString("activation"), "");
  EXPECT_GT(IndexOf(cg.g, fused), IndexOf(cg.g, FindOp(cg.g, "Concat")));
  EXPECT_NO_THROW(cg.g.Validate());
}

TEST(FuseConvEpilogues, ConstantChannelBiasFoldsIntoB) {
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "with conv bias" : "without conv bias");
    ConvGraph cg(with_bias);
    Tensor extra = RandomTensor({8, 1, 1}, -1, 1, 7);
    ir::Node* add = Op(cg.g, "Add", {Out(cg.conv), Const(cg.g, "extra", extra)}, "add");
    ir::Node* relu = Op(cg.g, "Relu", {Out(add)}, "relu");
    cg.Finish(Out(relu));
    std::vector<float> old_bias(8, 0.f);
    if (with_bias) old_bias = cg.b->constant.ToFloatVector();
    EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
    const ir::Node* fused = FindOp(cg.g, "KilnConv");
    ASSERT_NE(fused, nullptr);
    ASSERT_EQ(fused->inputs.size(), 3u);  // No residual.
    ASSERT_TRUE(fused->inputs[2]->is_constant());
    const Tensor& b = fused->inputs[2]->constant;
    ASSERT_EQ(b.dims(), std::vector<int64_t>{8});
    for (int64_t c = 0; c < 8; ++c)
      EXPECT_FLOAT_EQ(b.data<float>()[c], old_bias[static_cast<size_t>(c)] + extra.data<float>()[c]);
    EXPECT_EQ(fused->attrs.GetString("activation"), "Relu");
    EXPECT_EQ(cg.g.FindValue("extra"), nullptr);  // Unused constant dropped.
  }
}

TEST(FuseConvEpilogues, BiasThenResidualThenActivation) {
  ConvGraph cg;
  ir::Value* z = Input(cg.g, "z", {1, 8, 6, 6});
  ir::Node* add1 =
      Op(cg.g, "Add", {Const(cg.g, "extra", RandomTensor({1, 8, 1, 1}, -1, 1, 9)), Out(cg.conv)},
         "add1");
  ir::Node* add2 = Op(cg.g, "Add", {Out(add1), z}, "add2");
  ir::Node* act = Op(cg.g, "Tanh", {Out(add2)}, "act");
  cg.Finish(Out(act));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
  const ir::Node* fused = FindOp(cg.g, "KilnConv");
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(OpTypes(cg.g).size(), 1u);
  ASSERT_EQ(fused->inputs.size(), 4u);
  EXPECT_EQ(fused->inputs[3], z);
  EXPECT_EQ(fused->attrs.GetString("activation"), "Tanh");
}

TEST(FuseConvEpilogues, ActivationsWithParameters) {
  struct Case {
    std::string op;
    ir::Attributes attrs;
    std::string activation;
    float alpha, beta;
    bool has_alpha, has_beta;
  };
  ir::Attributes leaky;
  leaky.set("alpha", 0.2f);
  ir::Attributes hard_sigmoid;
  hard_sigmoid.set("alpha", 0.25f);
  const std::vector<Case> cases = {
      {"LeakyRelu", leaky, "LeakyRelu", 0.2f, 0.f, true, false},
      {"LeakyRelu", {}, "LeakyRelu", 0.01f, 0.f, true, false},
      {"HardSigmoid", hard_sigmoid, "HardSigmoid", 0.25f, 0.5f, true, true},
      {"HardSwish", {}, "HardSwish", 0.f, 0.f, false, false},
      {"Sigmoid", {}, "Sigmoid", 0.f, 0.f, false, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.op);
    ConvGraph cg;
    ir::Node* act = Op(cg.g, c.op, {Out(cg.conv)}, "act", c.attrs);
    cg.Finish(Out(act));
    EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
    const ir::Node* fused = FindOp(cg.g, "KilnConv");
    ASSERT_NE(fused, nullptr);
    EXPECT_EQ(fused->attrs.GetString("activation"), c.activation);
    EXPECT_EQ(fused->attrs.has("activation_alpha"), c.has_alpha);
    EXPECT_EQ(fused->attrs.has("activation_beta"), c.has_beta);
    if (c.has_alpha) {
      EXPECT_FLOAT_EQ(fused->attrs.GetFloat("activation_alpha"), c.alpha);
    }
    if (c.has_beta) {
      EXPECT_FLOAT_EQ(fused->attrs.GetFloat("activation_beta"), c.beta);
    }
  }
}

TEST(FuseConvEpilogues, ClipWithConstantBounds) {
  ConvGraph cg;
  ir::Node* clip = Op(cg.g, "Clip",
                      {Out(cg.conv), Const(cg.g, "lo", Tensor::Scalar(0.f)),
                       Const(cg.g, "hi", Tensor::Scalar(6.f))},
                      "clip");
  cg.Finish(Out(clip));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
  const ir::Node* fused = FindOp(cg.g, "KilnConv");
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(fused->attrs.GetString("activation"), "Clip");
  EXPECT_FLOAT_EQ(fused->attrs.GetFloat("activation_alpha"), 0.f);
  EXPECT_FLOAT_EQ(fused->attrs.GetFloat("activation_beta"), 6.f);

  // Only a max: min stays -inf.
  ConvGraph cg2;
  ir::Node* clip2 = Op(cg2.g, "Clip", {Out(cg2.conv), nullptr, Const(cg2.g, "hi", Tensor::Scalar(6.f))},
                       "clip");
  cg2.Finish(Out(clip2));
  EXPECT_EQ(FuseConvEpilogues(cg2.g), 1);
  const ir::Node* fused2 = FindOp(cg2.g, "KilnConv");
  ASSERT_NE(fused2, nullptr);
  EXPECT_EQ(fused2->attrs.GetFloat("activation_alpha"), -std::numeric_limits<float>::infinity());
  EXPECT_FLOAT_EQ(fused2->attrs.GetFloat("activation_beta"), 6.f);

  // A computed bound is not fused.
  ConvGraph cg3;
  ir::Value* hi = Input(cg3.g, "hi", {});
  ir::Node* clip3 = Op(cg3.g, "Clip", {Out(cg3.conv), nullptr, hi}, "clip");
  cg3.Finish(Out(clip3));
  EXPECT_EQ(FuseConvEpilogues(cg3.g), 0);
  EXPECT_EQ(OpTypes(cg3.g), (std::vector<std::string>{"Conv", "Clip"}));
}

TEST(FuseConvEpilogues, SiLUPattern) {
  ConvGraph cg;
  ir::Node* sig = Op(cg.g, "Sigmoid", {Out(cg.conv)}, "sig");
  ir::Node* mul = Op(cg.g, "Mul", {Out(sig), Out(cg.conv)}, "mul");
  cg.Finish(Out(mul));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
  EXPECT_EQ(OpTypes(cg.g), std::vector<std::string>{"KilnConv"});
  EXPECT_EQ(FindOp(cg.g, "KilnConv")->attrs.GetString("activation"), "SiLU");
  EXPECT_EQ(FindOp(cg.g, "KilnConv")->outputs[0]->name, "mul");
}

TEST(FuseConvEpilogues, SigmoidWithAnotherUseIsNotSiLU) {
  ConvGraph cg;
  ir::Node* sig = Op(cg.g, "Sigmoid", {Out(cg.conv)}, "sig");
  ir::Node* mul = Op(cg.g, "Mul", {Out(sig), Out(cg.conv)}, "mul");
  cg.g.outputs().push_back(Out(sig));
  cg.Finish(Out(mul));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 0);
  EXPECT_EQ(OpTypes(cg.g).size(), 3u);
}

TEST(FuseConvEpilogues, IntermediatesMustHaveOneConsumer) {
  {
    ConvGraph cg;  // Conv output read twice.
    ir::Node* relu = Op(cg.g, "Relu", {Out(cg.conv)}, "relu");
    ir::Node* neg = Op(cg.g, "Neg", {Out(cg.conv)}, "neg");
    cg.g.outputs().push_back(Out(neg));
    cg.Finish(Out(relu));
    EXPECT_EQ(FuseConvEpilogues(cg.g), 0);
  }
  {
    ConvGraph cg;  // Conv output is a graph output.
    ir::Node* relu = Op(cg.g, "Relu", {Out(cg.conv)}, "relu");
    cg.g.outputs().push_back(Out(cg.conv));
    cg.Finish(Out(relu));
    EXPECT_EQ(FuseConvEpilogues(cg.g), 0);
  }
  {
    ConvGraph cg;  // The Add's output is read twice: the Add fuses, the Relu does not.
    ir::Value* z = Input(cg.g, "z", {1, 8, 6, 6});
    ir::Node* add = Op(cg.g, "Add", {Out(cg.conv), z}, "add");
    ir::Node* relu = Op(cg.g, "Relu", {Out(add)}, "relu");
    cg.g.outputs().push_back(Out(add));
    cg.Finish(Out(relu));
    EXPECT_EQ(FuseConvEpilogues(cg.g), 1);
    EXPECT_EQ(OpTypes(cg.g), (std::vector<std::string>{"KilnConv", "Relu"}));
    EXPECT_EQ(FindOp(cg.g, "KilnConv")->attrs.GetString("activation"), "");
  }
}

TEST(FuseConvEpilogues, NothingToFuse) {
  ConvGraph cg;
  cg.Finish(Out(cg.conv));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 0);
  EXPECT_EQ(OpTypes(cg.g), std::vector<std::string>{"Conv"});
}

TEST(FuseConvEpilogues, BroadcastingResidualIsNotFused) {
  ConvGraph cg;
  ir::Value* z = Input(cg.g, "z", {1, 8, 1, 1});  // Non-constant, broadcasts.
  ir::Node* add = Op(cg.g, "Add", {Out(cg.conv), z}, "add");
  ir::Node* relu = Op(cg.g, "Relu", {Out(add)}, "relu");
  cg.Finish(Out(relu));
  EXPECT_EQ(FuseConvEpilogues(cg.g), 0);
  EXPECT_EQ(OpTypes(cg.g), (std::vector<std::string>{"Conv", "Add", "Relu"}));
}

// ---- Gemm / MatMul ----

struct MatMulGraph {
  ir::Graph g;
  ir::Value* a = nullptr;
  ir::Value* w = nullptr;
  ir::Node* mm = nullptr;
  explicit MatMulGraph(std::vector<int64_t> a_dims = {2, 5, 16}) {
    g.opset_version = kOpset;
    a = Input(g, "a", a_dims);
    w = Const(g, "w", RandomTensor({16, 12}, -1, 1, 4));
    mm = Op(g, "MatMul", {a, w}, "mm");
  }
  void Finish(ir::Value* output) {
    g.outputs().push_back(output);
    passes::InferShapes(g);
  }
};

TEST(FuseGemmEpilogues, MatMulBiasRelu) {
  MatMulGraph mg;
  ir::Value* bias = Const(mg.g, "bias", RandomTensor({12}, -1, 1, 5));
  ir::Node* add = Op(mg.g, "Add", {bias, Out(mg.mm)}, "add");
  ir::Node* relu = Op(mg.g, "Relu", {Out(add)}, "relu");
  mg.Finish(Out(relu));
  EXPECT_EQ(FuseGemmEpilogues(mg.g), 1);
  EXPECT_EQ(OpTypes(mg.g), std::vector<std::string>{"KilnMatMul"});
  const ir::Node* fused = FindOp(mg.g, "KilnMatMul");
  ASSERT_EQ(fused->inputs.size(), 3u);
  EXPECT_EQ(fused->inputs[0], mg.a);
  EXPECT_EQ(fused->inputs[1], mg.w);
  EXPECT_EQ(fused->inputs[2], bias);
  EXPECT_EQ(fused->attrs.GetInt("transB"), 0);
  EXPECT_EQ(fused->attrs.GetString("activation"), "Relu");
  EXPECT_EQ(fused->outputs[0]->name, "relu");
  EXPECT_NO_THROW(mg.g.Validate());
}

TEST(FuseGemmEpilogues, MatMulBiasOfShape1xN) {
  MatMulGraph mg({7, 16});
  ir::Node* add = Op(mg.g, "Add", {Out(mg.mm), Const(mg.g, "bias", RandomTensor({1, 12}))}, "add");
  mg.Finish(Out(add));
  EXPECT_EQ(FuseGemmEpilogues(mg.g), 1);
  const ir::Node* fused = FindOp(mg.g, "KilnMatMul");
  ASSERT_NE(fused, nullptr);
  ASSERT_EQ(fused->inputs.size(), 3u);
  ASSERT_TRUE(fused->inputs[2]->is_constant());
  EXPECT_EQ(fused->inputs[2]->constant.dims(), std::vector<int64_t>{12});
  EXPECT_EQ(fused->attrs.GetString("activation"), "");
}

TEST(FuseGemmEpilogues, GeluOnlyWhenTanh) {
  {
    MatMulGraph mg;  // Exact Gelu: bias fuses, the Gelu stays.
    ir::Node* add = Op(mg.g, "Add", {Out(mg.mm), Const(mg.g, "bias", RandomTensor({12}))}, "add");
    ir::Node* gelu = Op(mg.g, "Gelu", {Out(add)}, "gelu");
    mg.Finish(Out(gelu));
    EXPECT_EQ(FuseGemmEpilogues(mg.g), 1);
    EXPECT_EQ(OpTypes(mg.g), (std::vector<std::string>{"KilnMatMul", "Gelu"}));
    EXPECT_EQ(FindOp(mg.g, "KilnMatMul")->attrs.GetString("activation"), "");
  }
  {
    MatMulGraph mg;  // Exact Gelu alone: nothing fuses.
    ir::Node* gelu = Op(mg.g, "Gelu", {Out(mg.mm)}, "gelu");
    mg.Finish(Out(gelu));
    EXPECT_EQ(FuseGemmEpilogues(mg.g), 0);
  }
  {
    MatMulGraph mg;
    ir::Attributes tanh;
    tanh.set("approximate", std::string("tanh"));
    ir::Node* add = Op(mg.g, "Add", {Out(mg.mm), Const(mg.g, "bias", RandomTensor({12}))}, "add");
    ir::Node* gelu = Op(mg.g, "Gelu", {Out(add)}, "gelu", tanh);
    mg.Finish(Out(gelu));
    EXPECT_EQ(FuseGemmEpilogues(mg.g), 1);
    const ir::Node* fused = FindOp(mg.g, "KilnMatMul");
    ASSERT_NE(fused, nullptr);
    EXPECT_EQ(OpTypes(mg.g).size(), 1u);
    EXPECT_EQ(fused->attrs.GetString("activation"), "Gelu");
    EXPECT_EQ(fused->attrs.GetString("gelu_approximate"), "tanh");
  }
}

TEST(FuseGemmEpilogues, MatMulBiasResidual) {
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "bias + residual" : "residual only");
    MatMulGraph mg;
    ir::Value* residual = Input(mg.g, "r", {2, 5, 12});
    ir::Value* bias = Const(mg.g, "bias", RandomTensor({12}, -1, 1, 5));
    ir::Value* y = Out(mg.mm);
    if (with_bias) y = Out(Op(mg.g, "Add", {bias, y}, "add"));
    ir::Node* res = Op(mg.g, "Add", {residual, y}, "res");  // Residual first, as BERT exports.
    mg.Finish(Out(res));
    EXPECT_EQ(FuseGemmEpilogues(mg.g), 1);
    EXPECT_EQ(OpTypes(mg.g), std::vector<std::string>{"KilnMatMul"});
    const ir::Node* fused = FindOp(mg.g, "KilnMatMul");
    ASSERT_EQ(fused->inputs.size(), 4u);
    EXPECT_EQ(fused->inputs[2], with_bias ? bias : nullptr);
    EXPECT_EQ(fused->inputs[3], residual);
    EXPECT_EQ(fused->outputs[0]->name, "res");
    EXPECT_NO_THROW(mg.g.Validate());
  }
}

TEST(FuseGemmEpilogues, BroadcastingResidualIsNotFused) {
  MatMulGraph mg;
  ir::Value* row = Input(mg.g, "row", {5, 12});  // Broadcasts over the batch: not cuBLASLt's C.
  ir::Node* add = Op(mg.g, "Add", {Out(mg.mm), row}, "add");
  mg.Finish(Out(add));
  EXPECT_EQ(FuseGemmEpilogues(mg.g), 0);
}

// x -> GELU spelled out with Erf, the ways exporters write it.
ir::Value* SpelledOutGelu(ir::Graph& g, ir::Value* x, int form) {
  auto scalar = [&](const char* name, float v) { return Const(g, name, Tensor::Scalar(v)); };
  if (form == 0) {  // torch.nn.GELU: ((erf(x / sqrt2) + 1) * x) * 0.5
    ir::Value* d = Out(Op(g, "Div", {x, scalar("sqrt2", std::sqrt(2.f))}, "gelu_div"));
    ir::Value* e = Out(Op(g, "Erf", {d}, "gelu_erf"));
    ir::Value* a = Out(Op(g, "Add", {e, scalar("one", 1.f)}, "gelu_add"));
    ir::Value* m = Out(Op(g, "Mul", {x, a}, "gelu_mul"));
    return Out(Op(g, "Mul", {m, scalar("half", 0.5f)}, "gelu"));
  }
  // HF-style: (x * 0.5) * (1 + erf(x * 0.70710678))
  ir::Value* h = Out(Op(g, "Mul", {x, scalar("half", 0.5f)}, "gelu_half"));
  ir::Value* s = Out(Op(g, "Mul", {x, scalar("rsqrt2", 0.70710678f)}, "gelu_scale"));
  ir::Value* e = Out(Op(g, "Erf", {s}, "gelu_erf"));
  ir::Value* a = Out(Op(g, "Add", {scalar("one", 1.f), e}, "gelu_add"));
  return Out(Op(g, "Mul", {h, a}, "gelu"));
}

TEST(FuseGemmEpilogues, SpelledOutErfGeluBecomesTheEpilogueInFloat16) {
  for (DType low : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (int form : {0, 1}) {
      SCOPED_TRACE(StrCat(DTypeName(low), " form ", form));
      MatMulGraph mg;
      ir::Node* add = Op(mg.g, "Add", {Out(mg.mm), Const(mg.g, "bias", RandomTensor({12}))}, "add");
      mg.Finish(SpelledOutGelu(mg.g, Out(add), form));
      AssignPrecision(mg.g, low);
      EXPECT_EQ(FuseGemmEpilogues(mg.g), 1);
      const ir::Node* fused = FindOp(mg.g, "KilnMatMul");
      ASSERT_NE(fused, nullptr);
      if (low == DType::kFloat32) {  // Exact GELU stays exact: its nodes remain.
        EXPECT_EQ(fused->attrs.GetString("activation"), "");
        EXPECT_NE(FindOp(mg.g, "Erf"), nullptr);
        continue;
      }
      EXPECT_EQ(fused->attrs.GetString("activation"), "Gelu");
      EXPECT_EQ(fused->attrs.GetString("gelu_approximate"), "tanh");
      // Only the casts from and to the float32 graph input and output remain.
      EXPECT_EQ(OpTypes(mg.g), (std::vector<std::string>{"Cast", "KilnMatMul", "Cast"}));
      EXPECT_NO_THROW(mg.g.Validate());
    }
  }
}

TEST(FuseGemmEpilogues, ExactGeluOpBecomesTheEpilogueInFloat16) {
  MatMulGraph mg;
  ir::Node* gelu = Op(mg.g, "Gelu", {Out(mg.mm)}, "gelu");
  mg.Finish(Out(gelu));
  AssignPrecision(mg.g, DType::kFloat16);
  EXPECT_EQ(FuseGemmEpilogues(mg.g), 1);
  EXPECT_EQ(FindOp(mg.g, "KilnMatMul")->attrs.GetString("gelu_approximate"), "tanh");
  EXPECT_EQ(FindOp(mg.g, "Gelu"), nullptr);
}

TEST(FuseGemmEpilogues, ErfFunctionsThatAreNotGeluStay) {
  // x * erf(x / sqrt2) (no "+ 1"), and GELU whose inner value also leaves.
  for (int variant : {0, 1}) {
    SCOPED_TRACE(variant);
    MatMulGraph mg;
    ir::Value* x = Out(mg.mm);
    if (variant == 0) {
      ir::Value* d = Out(Op(mg.g, "Div", {x, Const(mg.g, "c", Tensor::Scalar(std::sqrt(2.f)))}, "d"));
      ir::Value* e = Out(Op(mg.g, "Erf", {d}, "e"));
      mg.Finish(Out(Op(mg.g, "Mul", {x, e}, "m")));
    } else {
      ir::Value* gelu = SpelledOutGelu(mg.g, x, 0);
      mg.g.outputs().push_back(mg.g.FindValue("gelu_erf"));
      mg.Finish(gelu);
    }
    AssignPrecision(mg.g, DType::kFloat16);
    EXPECT_EQ(FuseGemmEpilogues(mg.g), 0);
    EXPECT_NE(FindOp(mg.g, "Erf"), nullptr);
  }
}

TEST(FuseGemmEpilogues, MatMulWithComputedWeightIsNotFused) {
  ir::Graph g;
  g.opset_version = kOpset;
  ir::Value* a = Input(g, "a", {4, 8});
  ir::Value* b = Input(g, "b", {8, 3});
  ir::Node* mm = Op(g, "MatMul", {a, b}, "mm");
  ir::Node* relu = Op(g, "Relu", {Out(mm)}, "relu");
  g.outputs().push_back(Out(relu));
  passes::InferShapes(g);
  EXPECT_EQ(FuseGemmEpilogues(g), 0);
}

TEST(FuseGemmEpilogues, MatMulNonBiasAddIsNotFused) {
  MatMulGraph mg({7, 16});
  ir::Value* full = Const(mg.g, "full", RandomTensor({7, 12}));
  ir::Node* add = Op(mg.g, "Add", {Out(mg.mm), full}, "add");
  mg.Finish(Out(add));
  EXPECT_EQ(FuseGemmEpilogues(mg.g), 0);
}

ir::Graph* BuildGemm(ir::Graph& g, ir::Attributes attrs, std::vector<int64_t> c_dims,
                     const std::string& act = "Relu") {
  g.opset_version = kOpset;
  ir::Value* a = Input(g, "a", {6, 16});
  const bool trans_b = attrs.GetInt("transB", 0) != 0;
  ir::Value* b = Const(g, "b", RandomTensor(trans_b ? std::vector<int64_t>{10, 16}
                                                    : std::vector<int64_t>{16, 10}));
  std::vector<ir::Value*> inputs = {a, b};
  if (!c_dims.empty()) inputs.push_back(Const(g, "c", RandomTensor(c_dims)));
  ir::Node* gemm = Op(g, "Gemm", inputs, "gemm", attrs);
  ir::Node* out = act.empty() ? gemm : Op(g, act, {Out(gemm)}, "act");
  g.outputs().push_back(Out(out));
  passes::InferShapes(g);
  return &g;
}

TEST(FuseGemmEpilogues, GemmRelu) {
  ir::Attributes attrs;
  attrs.set("transB", int64_t{1});
  ir::Graph g;
  BuildGemm(g, attrs, {10});
  EXPECT_EQ(FuseGemmEpilogues(g), 1);
  const ir::Node* fused = FindOp(g, "KilnMatMul");
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(OpTypes(g).size(), 1u);
  ASSERT_EQ(fused->inputs.size(), 3u);
  EXPECT_EQ(fused->inputs[2]->name, "c");
  EXPECT_EQ(fused->attrs.GetInt("transB"), 1);
  EXPECT_EQ(fused->attrs.GetString("activation"), "Relu");

  ir::Graph g2;  // [1, N] C, no transpose, becomes a 1-D bias.
  BuildGemm(g2, {}, {1, 10});
  EXPECT_EQ(FuseGemmEpilogues(g2), 1);
  const ir::Node* fused2 = FindOp(g2, "KilnMatMul");
  ASSERT_NE(fused2, nullptr);
  EXPECT_EQ(fused2->inputs[2]->type.rank(), 1);
  EXPECT_EQ(fused2->attrs.GetInt("transB"), 0);

  ir::Graph g3;  // No C.
  BuildGemm(g3, {}, {});
  EXPECT_EQ(FuseGemmEpilogues(g3), 1);
  EXPECT_EQ(FindOp(g3, "KilnMatMul")->inputs.size(), 2u);
}

TEST(FuseGemmEpilogues, GemmVariantsThatDoNotFuse) {
  {
    ir::Attributes attrs;
    attrs.set("alpha", 2.f);
    ir::Graph g;
    BuildGemm(g, attrs, {10});
    EXPECT_EQ(FuseGemmEpilogues(g), 0);
  }
  {
    ir::Attributes attrs;
    attrs.set("beta", 0.5f);
    ir::Graph g;
    BuildGemm(g, attrs, {10});
    EXPECT_EQ(FuseGemmEpilogues(g), 0);
  }
  {
    ir::Attributes attrs;
    attrs.set("transA", int64_t{1});
    ir::Graph g;
    g.opset_version = kOpset;
    ir::Value* a = Input(g, "a", {16, 6});
    ir::Value* b = Const(g, "b", RandomTensor({16, 10}));
    ir::Node* gemm = Op(g, "Gemm", {a, b}, "gemm", attrs);
    ir::Node* relu = Op(g, "Relu", {Out(gemm)}, "relu");
    g.outputs().push_back(Out(relu));
    passes::InferShapes(g);
    EXPECT_EQ(FuseGemmEpilogues(g), 0);
  }
  {
    ir::Graph g;  // Full [M, N] C.
    BuildGemm(g, {}, {6, 10});
    EXPECT_EQ(FuseGemmEpilogues(g), 0);
  }
  {
    ir::Graph g;  // No activation: stays a Gemm.
    BuildGemm(g, {}, {10}, "");
    EXPECT_EQ(FuseGemmEpilogues(g), 0);
    EXPECT_EQ(OpTypes(g), std::vector<std::string>{"Gemm"});
  }
}

}  // namespace
}  // namespace kiln::builder
