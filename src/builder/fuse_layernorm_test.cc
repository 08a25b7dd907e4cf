// FuseSumLayerNorm on hand-built graphs (CPU only: the pass rewrites graphs;
// the GPU kernel is checked against the CPU backend in
// src/cuda/layers/reduce_test.cc).
#include "builder/fuse_layernorm.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "passes/passes.h"
#include "test_util.h"

namespace kiln::builder {
namespace {

using testing::RandomTensor;

constexpr int kOpset = 17;
constexpr int64_t kN = 64;

// BERT's embeddings in miniature: LayerNorm(table[ids] + position + type).
struct EmbeddingGraph {
  ir::Graph g;
  ir::Value* ids = nullptr;
  ir::Value* y = nullptr;
  ir::Node* ln = nullptr;

  // `type_rows` equal rows in the token-type term ([2, 5, n] constant).
  EmbeddingGraph(DType dtype, bool equal_type_rows, bool extra_reader = false) {
    ids = g.AddValue("ids", {DType::kInt64, ir::ShapeFromDims({2, 5})});
    ids->is_graph_input = true;
    g.inputs().push_back(ids);
    ir::Value* table = g.AddConstant("table", RandomTensor({30, kN}, -1, 1, 1).CastTo(dtype));
    ir::Value* pos = g.AddConstant("pos", RandomTensor({1, 5, kN}, -1, 1, 2).CastTo(dtype));
    Tensor type_rows = RandomTensor({2, 5, kN}, -1, 1, 3);
    if (equal_type_rows)
      for (int64_t r = 1; r < 10; ++r)
        for (int64_t k = 0; k < kN; ++k)
          type_rows.data<float>()[r * kN + k] = type_rows.data<float>()[k];
    ir::Value* type = g.AddConstant("type", type_rows.CastTo(dtype));
    ir::Value* words = Add("Gather", {table, ids}, "words");
    ir::Value* sum0 = Add("Add", {words, pos}, "sum0");
    ir::Value* sum1 = Add("Add", {sum0, type}, "sum1");
    ir::Value* scale = g.AddConstant("scale", RandomTensor({kN}, 0.5, 1.5, 4).CastTo(dtype));
    ir::Value* bias = g.AddConstant("bias", RandomTensor({kN}, -1, 1, 5).CastTo(dtype));
    y = Add("LayerNormalization", {sum1, scale, bias}, "y");
    ln = y->producer;
    ln->attrs.set("epsilon", 1e-3f);
    g.outputs().push_back(y);
    if (extra_reader) g.outputs().push_back(sum0);
    passes::InferShapes(g);
  }

  ir::Value* Add(const std::string& op, std::vector<ir::Value*> inputs, const std::string& name) {
    ir::Value* out = g.AddValue(name);
    ir::Node* node = g.AddNode(op, name + "_" + op, std::move(inputs), {out});
    node->opset = kOpset;
    return out;
  }
};

TEST(FuseSumLayerNorm, EmbeddingsBecomeOneNode) {
  for (DType dtype : {DType::kFloat16, DType::kFloat32}) {
    EmbeddingGraph eg(dtype, /*equal_type_rows=*/true);
    ASSERT_EQ(FuseSumLayerNorm(eg.g), 1);
    ASSERT_EQ(eg.g.nodes().size(), 1u);
    const ir::Node& n = *eg.g.nodes()[0];
    EXPECT_EQ(n.op_type, "KilnSumLayerNorm");
    EXPECT_EQ(n.outputs[0], eg.y);
    EXPECT_FLOAT_EQ(n.attrs.GetFloat("epsilon"), 1e-3f);
    ASSERT_EQ(n.inputs.size(), 6u);
    EXPECT_EQ(n.inputs[0]->name, "scale");
    EXPECT_EQ(n.inputs[1]->name, "bias");
    EXPECT_EQ(n.inputs[2], eg.ids);
    EXPECT_EQ(n.inputs[3]->name, "table");
    EXPECT_EQ(n.inputs[4]->name, "pos");
    // The token types' equal rows are stored once.
    ASSERT_TRUE(n.inputs[5]->is_constant());
    EXPECT_EQ(n.inputs[5]->constant.dims(), (std::vector<int64_t>{1, kN}));
    eg.g.Validate();
  }
}

TEST(FuseSumLayerNorm, DistinctRowsStayFullSize) {
  EmbeddingGraph eg(DType::kFloat16, /*equal_type_rows=*/false);
  ASSERT_EQ(FuseSumLayerNorm(eg.g), 1);
  const ir::Node& n = *eg.g.nodes()[0];
  EXPECT_EQ(n.inputs[5]->name, "type");
  EXPECT_EQ(n.inputs[5]->constant.dims(), (std::vector<int64_t>{2, 5, kN}));
}

TEST(FuseSumLayerNorm, SharedIntermediateOrOtherAxisStayUnfused) {
  {
    EmbeddingGraph eg(DType::kFloat16, true, /*extra_reader=*/true);  // sum0 is also an output.
    FuseSumLayerNorm(eg.g);
    // The first Add is read twice: only sum0 + type can fuse, with sum0 a term.
    for (const auto& n : eg.g.nodes()) EXPECT_NE(n->op_type, "LayerNormalization");
    int gathers = 0;
    for (const auto& n : eg.g.nodes()) gathers += n->op_type == "Gather";
    EXPECT_EQ(gathers, 1);
  }
  {
    EmbeddingGraph eg(DType::kFloat16, true);
    eg.ln->attrs.set("axis", int64_t{1});  // Normalizes [5, n], not rows of n.
    EXPECT_EQ(FuseSumLayerNorm(eg.g), 0);
    EXPECT_EQ(eg.g.nodes().size(), 4u);
  }
  {
    EmbeddingGraph eg(DType::kFloat16, true);
    eg.ln->outputs.push_back(eg.g.AddValue("mean"));  // A used Mean output.
    eg.g.outputs().push_back(eg.ln->outputs[1]);
    EXPECT_EQ(FuseSumLayerNorm(eg.g), 0);
  }
}

}  // namespace
}  // namespace kiln::builder
