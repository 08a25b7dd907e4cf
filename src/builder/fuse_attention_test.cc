// The attention fusion pass on the CPU: it only rewrites graphs. The real
// exported BERT (when present) fuses one attention per encoder layer and
// loses every head transpose; hand-built graphs check the variants that
// fuse and the ones that must not.
#include "builder/fuse_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "builder/fuse_conv_gemm.h"
#include "builder/fuse_elementwise.h"
#include "builder/lower.h"
#include "onnx/importer.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln::builder {
namespace {

namespace fs = std::filesystem;

constexpr int kOpset = 17;

ir::Value* Input(ir::Graph& g, const std::string& name, std::vector<int64_t> dims, DType dtype) {
  ir::Value* v = g.AddValue(name, {dtype, ir::ShapeFromDims(dims)});
  v->is_graph_input = true;
  g.inputs().push_back(v);
  return v;
}

ir::Node* Op(ir::Graph& g, const std::string& op, std::vector<ir::Value*> inputs,
             const std::string& out_name, ir::Attributes attrs = {}) {
  ir::Value* out = g.AddValue(out_name);
  ir::Node* node = g.AddNode(op, out_name + "_" + op, std::move(inputs), {out});
  node->attrs = std::move(attrs);
  node->opset = kOpset;
  return node;
}

ir::Value* Out(ir::Node* n) { return n->outputs[0]; }

ir::Attributes Perm(std::vector<int64_t> perm) {
  ir::Attributes a;
  a.set("perm", std::move(perm));
  return a;
}

ir::Value* ShapeConst(ir::Graph& g, const std::string& name, std::vector<int64_t> dims) {
  const int64_t n = static_cast<int64_t>(dims.size());
  return g.AddConstant(name, Tensor::FromInt64s({n}, dims));
}

std::map<std::string, int> Histogram(const ir::Graph& g) {
  std::map<std::string, int> h;
  for (const auto& n : g.nodes()) h[n->op_type]++;
  return h;
}

const ir::Node* FindOp(const ir::Graph& g, const std::string& op) {
  for (const auto& n : g.nodes())
    if (n->op_type == op) return n.get();
  return nullptr;
}

// How a hand-built attention graph deviates from the standard BERT form.
struct AttentionOptions {
  DType dtype = DType::kFloat16;
  int64_t batch = 2, seq = 5, heads = 2, head_dim = 32;
  bool mask = true;
  std::vector<int64_t> mask_dims;  // Empty: [batch, 1, 1, seq].
  bool mask_first = false;         // Add(mask, scores).
  std::string scale_op = "Div";    // "Div", "Mul", "MulConstFirst" or "" (none).
  bool k_two_transposes = false;   // Transpose [0,2,1,3] then [0,1,3,2].
  int64_t softmax_axis = -1;
  bool scores_extra_consumer = false;  // The scaled scores are also a graph output.
  bool merge_reshape = true;           // Reshape the output back to [b, s, h*d].
};

// Attention over graph inputs q, k, v [b,s,h*d] (and mask) -> "out".
struct AttentionGraph {
  ir::Graph g;
  ir::Value* q = nullptr;
  ir::Value* k = nullptr;
  ir::Value* v = nullptr;
  ir::Value* mask = nullptr;
  ir::Value* out = nullptr;

  explicit AttentionGraph(const AttentionOptions& o) {
    g.opset_version = kOpset;
    const int64_t b = o.batch, s = o.seq, h = o.heads, d = o.head_dim;
    q = Input(g, "q", {b, s, h * d}, o.dtype);
    k = Input(g, "k", {b, s, h * d}, o.dtype);
    v = Input(g, "v", {b, s, h * d}, o.dtype);
    auto split = [&](ir::Value* x, const std::string& name) {
      return Out(
          Op(g, "Reshape", {x, ShapeConst(g, name + "_shape", {b, s, h, d})}, name + "_split"));
    };
    ir::Value* qt = Out(Op(g, "Transpose", {split(q, "q")}, "qt", Perm({0, 2, 1, 3})));
    ir::Value* kt;
    if (o.k_two_transposes) {
      ir::Value* kh = Out(Op(g, "Transpose", {split(k, "k")}, "kh", Perm({0, 2, 1, 3})));
      kt = Out(Op(g, "Transpose", {kh}, "kt", Perm({0, 1, 3, 2})));
    } else {
      kt = Out(Op(g, "Transpose", {split(k, "k")}, "kt", Perm({0, 2, 3, 1})));
    }
    ir::Value* vt = Out(Op(g, "Transpose", {split(v, "v")}, "vt", Perm({0, 2, 1, 3})));
    ir::Value* scores = Out(Op(g, "MatMul", {qt, kt}, "scores"));
    const float sqrt_d = std::sqrt(static_cast<float>(d));
    if (o.scale_op == "Div") {
      scores = Out(Op(g, "Div",
                      {scores, g.AddConstant("sqrt_d", Tensor::Scalar(sqrt_d).CastTo(o.dtype))},
                      "scaled"));
    } else if (o.scale_op == "Mul" || o.scale_op == "MulConstFirst") {
      ir::Value* c = g.AddConstant("inv_sqrt_d", Tensor::Scalar(1.f / sqrt_d).CastTo(o.dtype));
      scores = Out(Op(g, "Mul",
                      o.scale_op == "Mul" ? std::vector<ir::Value*>{scores, c}
                                          : std::vector<ir::Value*>{c, scores},
                      "scaled"));
    }
    if (o.scores_extra_consumer) g.outputs().push_back(scores);
    if (o.mask) {
      mask = Input(g, "mask", o.mask_dims.empty() ? std::vector<int64_t>{b, 1, 1, s} : o.mask_dims,
                   o.dtype);
      scores = Out(Op(g, "Add",
                      o.mask_first ? std::vector<ir::Value*>{mask, scores}
                                   : std::vector<ir::Value*>{scores, mask},
                      "masked"));
    }
    ir::Attributes axis;
    axis.set("axis", o.softmax_axis);
    ir::Value* probs = Out(Op(g, "Softmax", {scores}, "probs", axis));
    ir::Value* ctx = Out(Op(g, "MatMul", {probs, vt}, "ctx"));
    out = Out(Op(g, "Transpose", {ctx}, "merged", Perm({0, 2, 1, 3})));
    if (o.merge_reshape)
      out = Out(Op(g, "Reshape", {out, ShapeConst(g, "out_shape", {b, s, h * d})}, "out"));
    g.outputs().push_back(out);
    passes::InferShapes(g);
  }
};

void ExpectFused(const AttentionOptions& o) {
  AttentionGraph ag(o);
  ASSERT_EQ(FuseAttention(ag.g), 1);
  EXPECT_NO_THROW(ag.g.Validate());
  auto h = Histogram(ag.g);
  EXPECT_EQ(h["KilnAttention"], 1);
  EXPECT_EQ(h["Transpose"], 0);
  EXPECT_EQ(h["Softmax"], 0);
  EXPECT_EQ(h["MatMul"], 0);
  EXPECT_EQ(h["Reshape"], 0);  // The head-split reshapes go too.
  const ir::Node* fused = FindOp(ag.g, "KilnAttention");
  ASSERT_NE(fused, nullptr);
  ASSERT_EQ(fused->inputs.size(), o.mask ? 4u : 3u);
  EXPECT_EQ(fused->inputs[0], ag.q);
  EXPECT_EQ(fused->inputs[1], ag.k);
  EXPECT_EQ(fused->inputs[2], ag.v);
  if (o.mask) {
    EXPECT_EQ(fused->inputs[3], ag.mask);
  }
  ASSERT_EQ(fused->outputs.size(), 1u);
  EXPECT_EQ(fused->outputs[0], ag.out);
  EXPECT_EQ(fused->outputs[0]->type.rank(), o.merge_reshape ? 3 : 4);
  EXPECT_EQ(fused->attrs.GetInt("num_heads"), o.heads);
  const float want_scale =
      o.scale_op.empty() ? 1.f : 1.f / std::sqrt(static_cast<float>(o.head_dim));
  // The scale constant went through the graph's dtype.
  EXPECT_NEAR(fused->attrs.GetFloat("scale"), want_scale, 2e-3 * want_scale);
  // Idempotent.
  EXPECT_EQ(FuseAttention(ag.g), 0);
}

TEST(FuseAttention, StandardBertFormFp16AndBf16) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(DTypeName(dtype));
    AttentionOptions o;
    o.dtype = dtype;
    ExpectFused(o);
  }
}

TEST(FuseAttention, Variants) {
  {
    SCOPED_TRACE("K transposed twice, Mul scale");
    AttentionOptions o;
    o.k_two_transposes = true;
    o.scale_op = "Mul";
    ExpectFused(o);
  }
  {
    SCOPED_TRACE("constant first in the scale Mul, mask first in the Add, axis 3");
    AttentionOptions o;
    o.scale_op = "MulConstFirst";
    o.mask_first = true;
    o.softmax_axis = 3;
    ExpectFused(o);
  }
  {
    SCOPED_TRACE("no scale, no mask");
    AttentionOptions o;
    o.scale_op = "";
    o.mask = false;
    ExpectFused(o);
  }
  {
    SCOPED_TRACE("mask [s] and [1,1,s], head dims 64 and 128");
    AttentionOptions o;
    o.mask_dims = {5};
    o.head_dim = 64;
    ExpectFused(o);
    o.mask_dims = {1, 1, 5};
    o.head_dim = 128;
    ExpectFused(o);
  }
  {
    SCOPED_TRACE("no merge reshape: output stays [b,s,h,d]");
    AttentionOptions o;
    o.merge_reshape = false;
    ExpectFused(o);
  }
}

void ExpectNotFused(const AttentionOptions& o) {
  AttentionGraph ag(o);
  const size_t nodes = ag.g.nodes().size();
  EXPECT_EQ(FuseAttention(ag.g), 0);
  EXPECT_EQ(ag.g.nodes().size(), nodes);
  EXPECT_EQ(FindOp(ag.g, "KilnAttention"), nullptr);
}

TEST(FuseAttention, NonMatchingGraphsStayUnfused) {
  {
    SCOPED_TRACE("float32");
    AttentionOptions o;
    o.dtype = DType::kFloat32;
    ExpectNotFused(o);
  }
  {
    SCOPED_TRACE("softmax over the query axis");
    AttentionOptions o;
    o.softmax_axis = 2;
    ExpectNotFused(o);
  }
  {
    SCOPED_TRACE("scaled scores also a graph output");
    AttentionOptions o;
    o.scores_extra_consumer = true;
    ExpectNotFused(o);
  }
  {
    SCOPED_TRACE("unsupported head dim 48");
    AttentionOptions o;
    o.head_dim = 48;
    ExpectNotFused(o);
  }
  {
    SCOPED_TRACE("mask varying over queries");
    AttentionOptions o;
    o.mask_dims = {2, 1, 5, 5};
    ExpectNotFused(o);
  }
  {
    SCOPED_TRACE("mask varying over heads");
    AttentionOptions o;
    o.mask_dims = {1, 2, 1, 5};
    ExpectNotFused(o);
  }
}

TEST(FuseAttention, ExtraConsumerOfProbabilitiesOrScores) {
  {
    AttentionOptions o;
    AttentionGraph ag(o);
    // The probabilities feed a second node.
    ir::Value* probs = ag.g.FindValue("probs");
    ASSERT_NE(probs, nullptr);
    ir::Node* extra = Op(ag.g, "Neg", {probs}, "extra");
    ag.g.outputs().push_back(Out(extra));
    passes::InferShapes(ag.g);
    EXPECT_EQ(FuseAttention(ag.g), 0);
  }
  {
    AttentionOptions o;
    AttentionGraph ag(o);
    // The raw scores feed a second node.
    ir::Value* scores = ag.g.FindValue("scores");
    ASSERT_NE(scores, nullptr);
    ir::Node* extra = Op(ag.g, "Neg", {scores}, "extra");
    ag.g.outputs().push_back(Out(extra));
    passes::InferShapes(ag.g);
    EXPECT_EQ(FuseAttention(ag.g), 0);
  }
}

TEST(FuseAttention, SharedProjectionKeepsItsReshape) {
  // The head-split Reshape of Q has a second reader: it stays and the fused
  // node reads its [b,s,h,d] output.
  AttentionOptions o;
  AttentionGraph ag(o);
  ir::Value* q_split = ag.g.FindValue("q_split");
  ASSERT_NE(q_split, nullptr);
  ir::Node* extra = Op(ag.g, "Neg", {q_split}, "extra");
  ag.g.outputs().push_back(Out(extra));
  passes::InferShapes(ag.g);
  ASSERT_EQ(FuseAttention(ag.g), 1);
  const ir::Node* fused = FindOp(ag.g, "KilnAttention");
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(fused->inputs[0], q_split);
  EXPECT_EQ(fused->inputs[0]->type.rank(), 4);
  EXPECT_EQ(fused->inputs[1], ag.k);
  EXPECT_EQ(Histogram(ag.g)["Reshape"], 1);
  EXPECT_NO_THROW(ag.g.Validate());
}

// ---- The exported BERT ----

fs::path ModelPath(const std::string& name) {
  const char* env = std::getenv("KILN_MODELS_DIR");
  fs::path dir = env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
  return dir / (name + ".onnx");
}

// Engine::Build's passes up to the attention fusion.
std::unique_ptr<ir::Graph> LowerUntilAttention(
    const std::string& model, const std::map<std::string, std::vector<int64_t>>& shapes,
    DType low) {
  auto graph = onnx_import::ImportModelFile(ModelPath(model).string());
  SpecializeShapes(*graph, shapes, nullptr);
  passes::Optimize(*graph);
  CheckShapesConcrete(*graph);
  AssignPrecision(*graph, low);
  FuseConvEpilogues(*graph);
  FuseGemmEpilogues(*graph);
  return graph;
}

TEST(FuseAttention, ExportedBertFusesOnePerLayer) {
  if (!fs::exists(ModelPath("bert")))
    GTEST_SKIP() << "export models first (scripts/export_models.py)";
  for (DType low : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t seq : {128, 77}) {
      SCOPED_TRACE(StrCat(DTypeName(low), " seq ", seq));
      auto graph =
          LowerUntilAttention("bert", {{"input_ids", {3, seq}}, {"attention_mask", {3, seq}}}, low);
      auto before = Histogram(*graph);
      const int layers = before["Softmax"];
      EXPECT_GE(layers, 1);
      EXPECT_EQ(before["Transpose"], 4 * layers);
      EXPECT_EQ(FuseAttention(*graph), layers);
      auto after = Histogram(*graph);
      EXPECT_EQ(after["KilnAttention"], layers);
      EXPECT_EQ(after["Softmax"], 0);
      EXPECT_EQ(after["Transpose"], 0);
      EXPECT_EQ(after["MatMul"], 0);
      EXPECT_EQ(after["Reshape"], 0);
      for (const auto& n : graph->nodes()) {
        if (n->op_type != "KilnAttention") continue;
        ASSERT_EQ(n->inputs.size(), 4u) << n->Describe();
        for (int i = 0; i < 3; ++i) {
          EXPECT_EQ(n->inputs[i]->type.dtype, low);
          EXPECT_EQ(ir::KnownDims(*n->inputs[i]->type.shape), (std::vector<int64_t>{3, seq, 768}));
        }
        EXPECT_EQ(ir::KnownDims(*n->inputs[3]->type.shape), (std::vector<int64_t>{3, 1, 1, seq}));
        EXPECT_EQ(ir::KnownDims(*n->outputs[0]->type.shape), (std::vector<int64_t>{3, seq, 768}));
        EXPECT_EQ(n->attrs.GetInt("num_heads"), 12);
        EXPECT_FLOAT_EQ(n->attrs.GetFloat("scale"), 0.125f);
      }
      // Q, K and V are projections of one input: one packed GEMM per layer.
      const int matmuls = Histogram(*graph)["KilnMatMul"];
      EXPECT_EQ(PackAttentionQkv(*graph), layers);
      EXPECT_EQ(Histogram(*graph)["KilnMatMul"], matmuls - 2 * layers);
      for (const auto& n : graph->nodes()) {
        if (n->op_type != "KilnAttention") continue;
        EXPECT_EQ(n->attrs.GetInt("packed_qkv"), 1);
        ASSERT_EQ(n->inputs.size(), 2u) << n->Describe();
        EXPECT_EQ(ir::KnownDims(*n->inputs[0]->type.shape), (std::vector<int64_t>{3, seq, 3 * 768}));
        const ir::Node* qkv = n->inputs[0]->producer;
        ASSERT_NE(qkv, nullptr);
        EXPECT_EQ(qkv->op_type, "KilnMatMul");
        ASSERT_EQ(qkv->inputs.size(), 3u);
        EXPECT_EQ(qkv->inputs[1]->constant.dims(), (std::vector<int64_t>{768, 3 * 768}));
        EXPECT_EQ(qkv->inputs[2]->constant.dims(), (std::vector<int64_t>{3 * 768}));
      }
      EXPECT_EQ(PackAttentionQkv(*graph), 0);  // Idempotent.
      // The rest of the build pipeline still runs on the fused graph.
      FuseElementwise(*graph);
      graph->SortTopologically();
      graph->RemoveUnusedValues();
      auto layouts = AssignLayouts(*graph, true);
      MergeCastsIntoLayoutChanges(*graph, layouts);
      graph->SortTopologically();
      EXPECT_NO_THROW(graph->Validate());
      for (const auto& n : graph->nodes())
        EXPECT_NE(gpu::GpuLayerRegistry::Global().Find(n->op_type), nullptr) << n->Describe();
    }
  }
}

// Three projections of one input become one GEMM whose weight and bias are
// the column-wise concatenation, in Q, K, V order; a projection with another
// reader keeps the attention unpacked.
TEST(PackAttentionQkv, ConcatenatesWeightsAndBiases) {
  for (bool shared_v : {false, true}) {
    SCOPED_TRACE(shared_v ? "V has another reader" : "packable");
    ir::Graph g;
    g.opset_version = 17;
    ir::Value* x = g.AddValue("x", {DType::kFloat16, ir::ShapeFromDims({2, 5, 8})});
    x->is_graph_input = true;
    g.inputs().push_back(x);
    std::vector<Tensor> weights, biases;
    std::vector<ir::Value*> projections;
    for (int i = 0; i < 3; ++i) {
      weights.push_back(kiln::testing::RandomTensor({8, 8}, -1, 1, 10 + i).CastTo(DType::kFloat16));
      biases.push_back(kiln::testing::RandomTensor({8}, -1, 1, 20 + i).CastTo(DType::kFloat16));
      ir::Value* y = g.AddValue(StrCat("p", i), {DType::kFloat16, ir::ShapeFromDims({2, 5, 8})});
      ir::Node* mm = g.AddNode("KilnMatMul", StrCat("mm", i),
                               {x, g.AddConstant(StrCat("w", i), weights.back()),
                                g.AddConstant(StrCat("b", i), biases.back())},
                               {y});
      mm->attrs.set("transB", int64_t{0});
      mm->attrs.set("activation", std::string());
      projections.push_back(y);
    }
    ir::Value* out = g.AddValue("out", {DType::kFloat16, ir::ShapeFromDims({2, 5, 8})});
    ir::Node* att = g.AddNode("KilnAttention", "att", projections, {out});
    att->attrs.set("num_heads", int64_t{2});
    att->attrs.set("scale", 0.5f);
    g.outputs().push_back(out);
    if (shared_v) g.outputs().push_back(projections[2]);
    EXPECT_EQ(PackAttentionQkv(g), shared_v ? 0 : 1);
    EXPECT_NO_THROW(g.Validate());
    if (shared_v) continue;
    ASSERT_EQ(att->inputs.size(), 1u);
    const ir::Node* qkv = att->inputs[0]->producer;
    ASSERT_NE(qkv, nullptr);
    EXPECT_EQ(qkv->inputs[0], x);
    const std::vector<float> w = qkv->inputs[1]->constant.ToFloatVector();
    const std::vector<float> b = qkv->inputs[2]->constant.ToFloatVector();
    ASSERT_EQ(w.size(), 8u * 24u);
    ASSERT_EQ(b.size(), 24u);
    for (int i = 0; i < 3; ++i) {
      const std::vector<float> wi = weights[static_cast<size_t>(i)].ToFloatVector();
      const std::vector<float> bi = biases[static_cast<size_t>(i)].ToFloatVector();
      for (int c = 0; c < 8; ++c) {
        EXPECT_EQ(b[static_cast<size_t>(8 * i + c)], bi[static_cast<size_t>(c)]);
        for (int r = 0; r < 8; ++r)
          EXPECT_EQ(w[static_cast<size_t>(r * 24 + 8 * i + c)], wi[static_cast<size_t>(r * 8 + c)]);
      }
    }
  }
}

TEST(FuseAttention, ExportedBertFp32StaysUnfused) {
  if (!fs::exists(ModelPath("bert")))
    GTEST_SKIP() << "export models first (scripts/export_models.py)";
  auto graph = LowerUntilAttention("bert", {{"input_ids", {2, 16}}, {"attention_mask", {2, 16}}},
                                   DType::kFloat32);
  EXPECT_EQ(FuseAttention(*graph), 0);
  EXPECT_EQ(Histogram(*graph)["KilnAttention"], 0);
}

}  // namespace
}  // namespace kiln::builder
