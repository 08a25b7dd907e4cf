#include "passes/passes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "cpu/executor.h"
#include "test_util.h"

namespace kiln::passes {
namespace {

using kiln::testing::MaxRelativeError;
using kiln::testing::RandomTensor;

constexpr int kOpset = 17;

// Small helpers to build graphs by hand.
ir::Value* AddInput(ir::Graph& g, const std::string& name, DType dtype, ir::Shape shape) {
  ir::Value* v = g.AddValue(name, {dtype, std::move(shape)});
  v->is_graph_input = true;
  g.inputs().push_back(v);
  return v;
}

ir::Value* Op(ir::Graph& g, const std::string& op, std::vector<ir::Value*> inputs,
              const std::string& out_name, ir::Attributes attrs = {}) {
  ir::Value* out = g.AddValue(out_name);
  ir::Node* node = g.AddNode(op, out_name + "_" + op, std::move(inputs), {out});
  node->attrs = std::move(attrs);
  return out;
}

std::vector<std::string> OpTypes(const ir::Graph& g) {
  std::vector<std::string> ops;
  for (const auto& n : g.nodes()) ops.push_back(n->op_type);
  return ops;
}

std::vector<Tensor> RunGraph(const ir::Graph& g, const std::map<std::string, Tensor>& feeds) {
  return cpu::Executor(g).Run(feeds);
}

// Builds the same graph twice (the passes mutate it) and checks that
// Optimize keeps every output numerically equal.
void ExpectOptimizeKeepsOutputs(const std::function<std::unique_ptr<ir::Graph>()>& build,
                                const std::map<std::string, Tensor>& feeds,
                                double tolerance = 1e-5) {
  std::unique_ptr<ir::Graph> reference = build();
  passes::InferShapes(*reference);
  std::unique_ptr<ir::Graph> optimized = build();
  Optimize(*optimized);
  std::vector<Tensor> expected = RunGraph(*reference, feeds);
  std::vector<Tensor> actual = RunGraph(*optimized, feeds);
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(actual[i].dims(), expected[i].dims()) << "output " << i;
    EXPECT_LT(MaxRelativeError(actual[i], expected[i]), tolerance) << "output " << i;
  }
}

// ---- Conv + BatchNormalization + Relu ----

struct ConvBnOptions {
  bool conv_bias = true;
  bool relu = true;
  bool extra_conv_consumer = false;
};

std::unique_ptr<ir::Graph> BuildConvBn(const ConvBnOptions& o) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({2, 3, 6, 6}));
  ir::Value* w = g->AddConstant("w", RandomTensor({4, 3, 3, 3}, -1, 1, 11));
  std::vector<ir::Value*> conv_inputs = {x, w};
  if (o.conv_bias) conv_inputs.push_back(g->AddConstant("b", RandomTensor({4}, -1, 1, 12)));
  ir::Attributes conv_attrs;
  conv_attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  ir::Value* conv = Op(*g, "Conv", conv_inputs, "conv", conv_attrs);
  // Non-trivial running statistics so every term of the fold matters.
  ir::Value* scale = g->AddConstant("scale", RandomTensor({4}, 0.5, 2, 13));
  ir::Value* beta = g->AddConstant("beta", RandomTensor({4}, -1, 1, 14));
  ir::Value* mean = g->AddConstant("mean", RandomTensor({4}, -0.5, 0.5, 15));
  ir::Value* var = g->AddConstant("var", RandomTensor({4}, 0.1, 3, 16));
  ir::Attributes bn_attrs;
  bn_attrs.set("epsilon", 1e-3f);
  ir::Value* bn =
      Op(*g, "BatchNormalization", {conv, scale, beta, mean, var}, o.relu ? "bn" : "y", bn_attrs);
  g->outputs().push_back(o.relu ? Op(*g, "Relu", {bn}, "y") : bn);
  if (o.extra_conv_consumer) g->outputs().push_back(Op(*g, "Relu", {conv}, "side"));
  return g;
}

std::map<std::string, Tensor> ConvFeeds() { return {{"x", RandomTensor({2, 3, 6, 6}, -1, 1, 7)}}; }

TEST(PassesTest, ConvBatchNormReluFolds) {
  auto g = BuildConvBn({});
  Optimize(*g);
  EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Conv", "Relu"}));
  ASSERT_EQ(g->outputs().size(), 1u);
  EXPECT_EQ(g->outputs()[0]->name, "y");
  // The folded Conv has constant weights and bias, and the intermediate BN
  // parameters are gone.
  const ir::Node& conv = *g->nodes()[0];
  ASSERT_EQ(conv.inputs.size(), 3u);
  EXPECT_TRUE(conv.inputs[1]->is_constant());
  EXPECT_TRUE(conv.inputs[2]->is_constant());
  EXPECT_EQ(g->FindValue("scale"), nullptr);
  ExpectOptimizeKeepsOutputs([] { return BuildConvBn({}); }, ConvFeeds());
}

TEST(PassesTest, ConvWithoutBiasFoldsAndBnOutputKeepsItsName) {
  ConvBnOptions o;
  o.conv_bias = false;
  o.relu = false;
  auto g = BuildConvBn(o);
  EXPECT_EQ(FoldBatchNorm(*g), 1);
  EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Conv"}));
  EXPECT_EQ(g->nodes()[0]->outputs[0]->name, "y");
  EXPECT_EQ(g->outputs()[0]->name, "y");
  EXPECT_EQ(g->outputs()[0]->producer, g->nodes()[0].get());
  g->Validate();
  ExpectOptimizeKeepsOutputs([o] { return BuildConvBn(o); }, ConvFeeds());
}

TEST(PassesTest, ConvWithAnotherConsumerDoesNotFold) {
  ConvBnOptions o;
  o.extra_conv_consumer = true;
  auto g = BuildConvBn(o);
  EXPECT_EQ(FoldBatchNorm(*g), 0);
  std::vector<std::string> ops = OpTypes(*g);
  EXPECT_EQ(std::count(ops.begin(), ops.end(), "BatchNormalization"), 1);
  ExpectOptimizeKeepsOutputs([o] { return BuildConvBn(o); }, ConvFeeds());
}

// ---- Gemm / MatMul + BatchNormalization ----

std::unique_ptr<ir::Graph> BuildDenseBn(const std::string& op, bool trans_b) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({3, 5}));
  std::vector<int64_t> w_dims = trans_b ? std::vector<int64_t>{4, 5} : std::vector<int64_t>{5, 4};
  ir::Value* w = g->AddConstant("w", RandomTensor(w_dims, -1, 1, 21));
  ir::Value* dense;
  if (op == "Gemm") {
    ir::Attributes attrs;
    attrs.set("transB", int64_t{trans_b ? 1 : 0});
    attrs.set("alpha", 0.7f);
    attrs.set("beta", 1.5f);
    ir::Value* c = g->AddConstant("c", RandomTensor({4}, -1, 1, 22));
    dense = Op(*g, "Gemm", {x, w, c}, "dense", attrs);
  } else {
    dense = Op(*g, "MatMul", {x, w}, "dense");
  }
  ir::Value* scale = g->AddConstant("scale", RandomTensor({4}, 0.5, 2, 23));
  ir::Value* beta = g->AddConstant("beta", RandomTensor({4}, -1, 1, 24));
  ir::Value* mean = g->AddConstant("mean", RandomTensor({4}, -0.5, 0.5, 25));
  ir::Value* var = g->AddConstant("var", RandomTensor({4}, 0.1, 3, 26));
  g->outputs().push_back(Op(*g, "BatchNormalization", {dense, scale, beta, mean, var}, "y"));
  return g;
}

TEST(PassesTest, GemmAndMatMulBatchNormFold) {
  std::map<std::string, Tensor> feeds = {{"x", RandomTensor({3, 5}, -1, 1, 27)}};
  for (auto [op, trans_b] : std::vector<std::pair<std::string, bool>>{
           {"Gemm", false}, {"Gemm", true}, {"MatMul", false}}) {
    SCOPED_TRACE(op + (trans_b ? " transB" : ""));
    auto g = BuildDenseBn(op, trans_b);
    Optimize(*g);
    EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Gemm"}));
    EXPECT_EQ(g->outputs()[0]->name, "y");
    ExpectOptimizeKeepsOutputs([op = op, trans_b = trans_b] { return BuildDenseBn(op, trans_b); },
                               feeds);
  }
}

// ---- Shape -> Gather -> Unsqueeze -> Concat -> Reshape ----

std::unique_ptr<ir::Graph> BuildFlattenChain(ir::Dim batch) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, {batch, ir::Dim::Known(3), ir::Dim::Known(4)});
  ir::Value* shape = Op(*g, "Shape", {x}, "shape");
  ir::Value* zero = g->AddConstant("zero", Tensor::FromInt64s({}, {0}));
  ir::Value* n = Op(*g, "Gather", {shape, zero}, "n");
  ir::Value* axes = g->AddConstant("axes", Tensor::FromInt64s({1}, {0}));
  ir::Value* n1 = Op(*g, "Unsqueeze", {n, axes}, "n1");
  ir::Value* minus_one = g->AddConstant("minus_one", Tensor::FromInt64s({1}, {-1}));
  ir::Attributes concat_attrs;
  concat_attrs.set("axis", int64_t{0});
  ir::Value* target = Op(*g, "Concat", {n1, minus_one}, "target", concat_attrs);
  g->outputs().push_back(Op(*g, "Reshape", {x, target}, "y"));
  return g;
}

TEST(PassesTest, ShapeChainFoldsToConstantReshapeShape) {
  auto g = BuildFlattenChain(ir::Dim::Known(2));
  Optimize(*g);
  ASSERT_EQ(OpTypes(*g), (std::vector<std::string>{"Reshape"}));
  const ir::Value* target = g->nodes()[0]->inputs[1];
  ASSERT_TRUE(target->is_constant());
  EXPECT_EQ(target->constant.ToInt64Vector(), (std::vector<int64_t>{2, -1}));
  const ir::Value* y = g->outputs()[0];
  EXPECT_EQ(y->name, "y");
  EXPECT_EQ(y->type.ToString(), "float32[2,12]");
  ExpectOptimizeKeepsOutputs([] { return BuildFlattenChain(ir::Dim::Known(2)); },
                             {{"x", RandomTensor({2, 3, 4}, -1, 1, 31)}});
}

TEST(PassesTest, ShapeChainWithSymbolicBatchStays) {
  auto g = BuildFlattenChain(ir::Dim::Symbol("N"));
  EXPECT_EQ(FoldConstants(*g), 0);
  InferShapes(*g);
  EXPECT_EQ(g->nodes().size(), 5u);
  // Still runs with any batch.
  std::vector<Tensor> out = RunGraph(*g, {{"x", RandomTensor({5, 3, 4}, -1, 1, 32)}});
  EXPECT_EQ(out[0].dims(), (std::vector<int64_t>{5, 12}));
}

TEST(PassesTest, GatherOfKnownDimFoldsUnderSymbolicBatch) {
  // y = Reshape(x, [x.shape[0], x.shape[-1] * 3]) with x [N,3,4]: the known
  // last dim folds, the symbolic batch stays a Gather.
  auto build = [] {
    auto g = std::make_unique<ir::Graph>();
    g->opset_version = kOpset;
    ir::Value* x = AddInput(*g, "x", DType::kFloat32,
                            {ir::Dim::Symbol("N"), ir::Dim::Known(3), ir::Dim::Known(4)});
    ir::Value* shape = Op(*g, "Shape", {x}, "shape");
    ir::Value* batch =
        Op(*g, "Gather", {shape, g->AddConstant("i0", Tensor::FromInt64s({1}, {0}))}, "batch");
    ir::Value* last =
        Op(*g, "Gather", {shape, g->AddConstant("i2", Tensor::FromInt64s({1}, {-1}))}, "last");
    ir::Value* cols =
        Op(*g, "Mul", {last, g->AddConstant("three", Tensor::FromInt64s({1}, {3}))}, "cols");
    ir::Attributes concat_attrs;
    concat_attrs.set("axis", int64_t{0});
    ir::Value* target = Op(*g, "Concat", {batch, cols}, "target", concat_attrs);
    g->outputs().push_back(Op(*g, "Reshape", {x, target}, "y"));
    return g;
  };
  auto g = build();
  Optimize(*g);
  EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Shape", "Gather", "Concat", "Reshape"}));
  const ir::Value* cols = g->nodes()[2]->inputs[1];
  ASSERT_TRUE(cols->is_constant());
  EXPECT_EQ(cols->constant.ToInt64Vector(), (std::vector<int64_t>{12}));
  ExpectOptimizeKeepsOutputs(build, {{"x", RandomTensor({5, 3, 4}, -1, 1, 33)}});
}

TEST(PassesTest, SizeAndShapeWithStartEndFold) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({2, 3, 4, 5}));
  ir::Attributes attrs;
  attrs.set("start", int64_t{1});
  attrs.set("end", int64_t{-1});
  g->outputs().push_back(Op(*g, "Shape", {x}, "middle", attrs));
  g->outputs().push_back(Op(*g, "Size", {x}, "size"));
  InferShapes(*g);
  EXPECT_EQ(FoldConstants(*g), 2);
  EXPECT_TRUE(g->nodes().empty());
  EXPECT_EQ(g->outputs()[0]->constant.ToInt64Vector(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(g->outputs()[1]->constant.rank(), 0);
  EXPECT_EQ(g->outputs()[1]->constant.GetAsInt64(0), 120);
  // A graph of constants still runs: the executor returns them.
  std::vector<Tensor> out = RunGraph(*g, {{"x", RandomTensor({2, 3, 4, 5})}});
  EXPECT_EQ(out[0].ToInt64Vector(), (std::vector<int64_t>{3, 4}));
}

TEST(PassesTest, ConstantArithmeticFoldsButHugeConstantsDoNot) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({3}));
  ir::Value* a = g->AddConstant("a", Tensor::FromFloats({3}, {1, 2, 3}));
  ir::Value* b = g->AddConstant("b", Tensor::FromFloats({3}, {10, 20, 30}));
  ir::Value* sum = Op(*g, "Add", {a, b}, "sum");
  g->outputs().push_back(Op(*g, "Mul", {x, sum}, "y"));
  // 2^27 floats = 512 MB from a one-element input: must stay a node.
  ir::Value* big_shape = g->AddConstant("big_shape", Tensor::FromInt64s({1}, {int64_t{1} << 27}));
  g->outputs().push_back(Op(*g, "ConstantOfShape", {big_shape}, "big"));
  InferShapes(*g);
  EXPECT_EQ(FoldConstants(*g), 1);
  EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Mul", "ConstantOfShape"}));
  const ir::Value* folded = g->nodes()[0]->inputs[1];
  ASSERT_TRUE(folded->is_constant());
  EXPECT_EQ(folded->constant.ToFloatVector(), (std::vector<float>{11, 22, 33}));
  EXPECT_EQ(g->FindValue("a"), nullptr);  // Unused after folding.
}

// ---- Identity / Dropout removal ----

TEST(PassesTest, IdentityRemovalKeepsGraphOutputNames) {
  auto build = [] {
    auto g = std::make_unique<ir::Graph>();
    g->opset_version = kOpset;
    ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({2, 3}));
    ir::Value* t = Op(*g, "Identity", {x}, "t");  // Input -> inner: removable.
    ir::Value* r = Op(*g, "Relu", {t}, "r");
    g->outputs().push_back(Op(*g, "Identity", {r}, "y"));       // Inner -> output: renamed.
    g->outputs().push_back(Op(*g, "Identity", {x}, "x_copy"));  // Input -> output: kept.
    return g;
  };
  auto g = build();
  EXPECT_EQ(RemoveIdentities(*g), 2);
  EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Relu", "Identity"}));
  const ir::Node& relu = *g->nodes()[0];
  EXPECT_EQ(relu.inputs[0]->name, "x");
  EXPECT_EQ(relu.outputs[0]->name, "y");
  EXPECT_EQ(g->outputs()[0]->name, "y");
  EXPECT_EQ(g->outputs()[1]->name, "x_copy");
  EXPECT_EQ(g->FindValue("r"), nullptr);
  g->Validate();
  ExpectOptimizeKeepsOutputs(build, {{"x", RandomTensor({2, 3})}});
}

TEST(PassesTest, DropoutRemovedOnlyInInferenceMode) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({4}));
  ir::Value* ratio = g->AddConstant("ratio", Tensor::Scalar(0.5f));
  ir::Value* on = g->AddConstant("on", [] {
    Tensor t(DType::kBool, {});
    t.data<uint8_t>()[0] = 1;
    return t;
  }());
  ir::Value* a = Op(*g, "Dropout", {x}, "a");
  // Unused mask output: still removable.
  ir::Value* b = g->AddValue("b");
  ir::Value* mask = g->AddValue("mask");
  g->AddNode("Dropout", "dropout_b", {a, ratio}, {b, mask});
  ir::Value* c = Op(*g, "Dropout", {b, ratio, on}, "c");  // training_mode = true: kept.
  g->outputs().push_back(Op(*g, "Relu", {c}, "y"));
  EXPECT_EQ(RemoveIdentities(*g), 2);
  EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Dropout", "Relu"}));
  EXPECT_EQ(g->nodes()[0]->inputs[0]->name, "x");
  EXPECT_EQ(g->FindValue("mask"), nullptr);
  g->Validate();
}

// ---- Dead code ----

TEST(PassesTest, DeadNodesAreRemoved) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({3}));
  ir::Value* dead1 = Op(*g, "Relu", {x}, "dead1");
  Op(*g, "Neg", {dead1}, "dead2");  // A dead chain of two.
  ir::Value* unused_weight = g->AddConstant("unused", Tensor::FromFloats({1}, {1}));
  Op(*g, "Add", {x, unused_weight}, "dead3");
  g->outputs().push_back(Op(*g, "Abs", {x}, "y"));
  EXPECT_EQ(EliminateDeadCode(*g), 3);
  EXPECT_EQ(OpTypes(*g), (std::vector<std::string>{"Abs"}));
  EXPECT_EQ(g->FindValue("dead1"), nullptr);
  EXPECT_EQ(g->FindValue("unused"), nullptr);
  EXPECT_NE(g->FindValue("x"), nullptr);
  EXPECT_EQ(EliminateDeadCode(*g), 0);  // Idempotent.
}

// ---- Shape inference merging ----

TEST(PassesTest, InferShapesMergesDeclaredTypes) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, {ir::Dim::Known(2), ir::Dim::Symbol("N")});
  ir::Value* y = Op(*g, "Relu", {x}, "y");
  // The declaration knows the dim the input leaves symbolic.
  y->type = {DType::kFloat32, ir::Shape{ir::Dim::Unknown(), ir::Dim::Known(7)}};
  g->outputs().push_back(y);
  InferShapes(*g);
  EXPECT_EQ(y->type.ToString(), "float32[2,7]");
  EXPECT_EQ(x->type.ToString(), "float32[2,N]");  // Graph inputs keep their declaration.
}

TEST(PassesTest, InferShapesReportsConflicts) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({2, 5}));
  ir::Value* y = Op(*g, "Relu", {x}, "y");
  y->type = {DType::kFloat32, ir::ShapeFromDims({3, 5})};
  g->outputs().push_back(y);
  try {
    InferShapes(*g);
    FAIL() << "expected a conflict error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("'y'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Relu"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3,5]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2,5]"), std::string::npos) << msg;
  }
  // A dtype conflict too.
  y->type = {DType::kInt64, std::nullopt};
  EXPECT_THROW(InferShapes(*g), Error);
}

TEST(PassesTest, UnknownOperatorFailsInferenceWithItsName) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, ir::ShapeFromDims({2}));
  g->outputs().push_back(Op(*g, "NoSuchOp", {x}, "y"));
  try {
    Optimize(*g);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("NoSuchOp"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln::passes
