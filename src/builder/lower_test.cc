// The lowering passes on real models, on the CPU (no GPU needed): every
// node of the lowered graph has a GPU layer, convolutions are fused and
// channels-last in FP16, bindings keep their names, dtypes and layouts.
#include "builder/lower.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "onnx/importer.h"
#include "runtime/engine_impl.h"

namespace kiln::builder {
namespace {

namespace fs = std::filesystem;

fs::path ModelPath(const std::string& name) {
  const char* env = std::getenv("KILN_MODELS_DIR");
  fs::path dir = env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
  return dir / (name + ".onnx");
}

struct Lowered {
  std::unique_ptr<ir::Graph> graph;
  std::unordered_map<const ir::Value*, gpu::Layout> layouts;
};

// The lowering Engine::Build runs, minus layer creation.
Lowered Lower(const std::string& model, const std::map<std::string, std::vector<int64_t>>& shapes,
              DType low, bool conv_pool_stems = true) {
  Lowered l;
  l.graph = onnx_import::ImportModelFile(ModelPath(model).string());
  runtime::LoweringOptions options;
  options.conv_pool_stems = conv_pool_stems;
  options.precision = low == DType::kFloat16    ? Precision::kFP16
                      : low == DType::kBFloat16 ? Precision::kBF16
                                                : Precision::kFP32;
  LowerGraph(*l.graph, l.layouts, options, shapes, nullptr);
  return l;
}

std::map<std::string, int> Histogram(const ir::Graph& g) {
  std::map<std::string, int> h;
  for (const auto& n : g.nodes()) h[n->op_type]++;
  return h;
}

void ExpectEveryNodeHasGpuLayer(const ir::Graph& g) {
  for (const auto& n : g.nodes())
    EXPECT_NE(gpu::GpuLayerRegistry::Global().Find(n->op_type), nullptr) << n->Describe();
}

TEST(LowerTest, Resnet18Fp16IsFusedAndChannelsLast) {
  if (!fs::exists(ModelPath("resnet18"))) GTEST_SKIP() << "export models first (scripts/export_models.py)";
  Lowered l = Lower("resnet18", {{"input", {8, 3, 224, 224}}}, DType::kFloat16);
  auto h = Histogram(*l.graph);
  for (const auto& [op, count] : h) std::cout << "    " << op << ": " << count << "\n";
  // 20 convolutions: the stem conv1 -> relu -> maxpool is one KilnConvPool
  // reading the float32 input; 16 absorb their ReLU (and residual Add); the
  // 3 downsampling convolutions feed another conv's residual input unchanged.
  EXPECT_EQ(h["KilnConvPool"], 1);
  EXPECT_EQ(h["KilnConv"], 16);
  EXPECT_EQ(h["Conv"] + h["KilnConv"], 19);
  EXPECT_EQ(h["MaxPool"], 0);
  EXPECT_EQ(h["Relu"], 0);
  EXPECT_EQ(h["Add"], 0);
  EXPECT_EQ(h["KilnPadSpaceToDepth"], 0);
  EXPECT_EQ(h["KilnToNHWC"], 0);
  const ir::Node* stem = nullptr;
  for (const auto& n : l.graph->nodes())
    if (n->op_type == "KilnConvPool") stem = n.get();
  ASSERT_NE(stem, nullptr);
  EXPECT_EQ(stem->inputs[0], l.graph->inputs()[0]);
  EXPECT_EQ(l.layouts.count(stem->outputs[0]), 1u);
  EXPECT_EQ(h["Cast"], 0);  // The FC writes the float32 logits itself.
  EXPECT_EQ(h["Gemm"], 1);
  ExpectEveryNodeHasGpuLayer(*l.graph);
  for (const auto& n : l.graph->nodes())
    if (n->op_type == "KilnConv") {
      EXPECT_EQ(n->inputs[0]->type.dtype, DType::kFloat16);
      EXPECT_EQ(l.layouts.count(n->outputs[0]), 1u) << n->Describe();
    }
  ASSERT_EQ(l.graph->outputs().size(), 1u);
  EXPECT_EQ(l.graph->outputs()[0]->name, "logits");
  EXPECT_EQ(l.graph->outputs()[0]->type.dtype, DType::kFloat32);
  EXPECT_EQ(l.layouts.count(l.graph->outputs()[0]), 0u);
  ASSERT_EQ(l.graph->inputs().size(), 1u);
  EXPECT_EQ(l.graph->inputs()[0]->type.dtype, DType::kFloat32);
}

// LoweringOptions::conv_pool_stems off (KILN_CONV_POOL=0 at build): the
// space-to-depth stem, its convolution and the max pool stay separate.
TEST(LowerTest, Resnet18Fp16WithoutConvPoolStem) {
  if (!fs::exists(ModelPath("resnet18")))
    GTEST_SKIP() << "export models first (scripts/export_models.py)";
  Lowered l = Lower("resnet18", {{"input", {8, 3, 224, 224}}}, DType::kFloat16,
                    /*conv_pool_stems=*/false);
  auto h = Histogram(*l.graph);
  EXPECT_EQ(h["KilnConvPool"], 0);
  EXPECT_EQ(h["KilnPadSpaceToDepth"], 1);
  EXPECT_EQ(h["MaxPool"], 1);
  EXPECT_EQ(h["KilnConv"], 17);
  ExpectEveryNodeHasGpuLayer(*l.graph);
}

TEST(LowerTest, Resnet18Fp32StaysRowMajor) {
  if (!fs::exists(ModelPath("resnet18"))) GTEST_SKIP() << "export models first (scripts/export_models.py)";
  Lowered l = Lower("resnet18", {{"input", {2, 3, 224, 224}}}, DType::kFloat32);
  auto h = Histogram(*l.graph);
  EXPECT_EQ(h["KilnConv"], 17);
  EXPECT_TRUE(l.layouts.empty());
  ExpectEveryNodeHasGpuLayer(*l.graph);
}

TEST(LowerTest, BertFp16HasGpuLayersForEveryNode) {
  if (!fs::exists(ModelPath("bert"))) GTEST_SKIP() << "export models first (scripts/export_models.py)";
  Lowered l = Lower("bert", {{"input_ids", {2, 128}}, {"attention_mask", {2, 128}}}, DType::kFloat16);
  auto h = Histogram(*l.graph);
  for (const auto& [op, count] : h) std::cout << "    " << op << ": " << count << "\n";
  EXPECT_EQ(h["KilnAttention"], 12);  // One fused attention per encoder layer, no head transposes.
  EXPECT_EQ(h["Transpose"], 0);
  ExpectEveryNodeHasGpuLayer(*l.graph);
  for (const ir::Value* out : l.graph->outputs()) EXPECT_EQ(out->type.dtype, DType::kFloat32) << out->name;
  EXPECT_EQ(l.graph->outputs()[0]->name, "last_hidden_state");
  // The last LayerNorm writes the float32 output itself (FuseOutputCasts).
  ASSERT_NE(l.graph->outputs()[0]->producer, nullptr);
  EXPECT_EQ(l.graph->outputs()[0]->producer->op_type, "LayerNormalization");
  // Per layer: the packed QKV, output, FFN-in (+GELU) and FFN-out GEMMs;
  // residual Adds and GELU are in GEMM epilogues.
  EXPECT_EQ(h["KilnMatMul"], 4 * 12);
  EXPECT_EQ(h["Add"], 0);
  EXPECT_EQ(h["Erf"], 0);
  EXPECT_EQ(l.graph->outputs()[1]->name, "pooler_output");
  // The embeddings (word rows + position + token type, LayerNorm) are one
  // node; the pooler's Tanh writes the float32 output itself; the mask's
  // int64 -> float32 -> float16 casts are one Cast (FuseOutputCasts).
  EXPECT_EQ(h["KilnSumLayerNorm"], 1);
  EXPECT_EQ(h["LayerNormalization"], 2 * 12);
  EXPECT_EQ(h["Gather"], 1);  // The pooler's token 0.
  ASSERT_NE(l.graph->outputs()[1]->producer, nullptr);
  EXPECT_EQ(l.graph->outputs()[1]->producer->op_type, "Tanh");
  EXPECT_EQ(h["Cast"], 2);  // The mask, and the pooler's token back to float16.
}

TEST(LowerTest, MobilenetV2Fp16HasGpuLayersForEveryNode) {
  if (!fs::exists(ModelPath("mobilenet_v2"))) GTEST_SKIP() << "export models first";
  Lowered l = Lower("mobilenet_v2", {{"input", {4, 3, 224, 224}}}, DType::kFloat16);
  auto h = Histogram(*l.graph);
  for (const auto& [op, count] : h) std::cout << "    " << op << ": " << count << "\n";
  // 52 convolutions; the 7 linear-bottleneck projections without a residual
  // have nothing to absorb.
  EXPECT_EQ(h["Conv"] + h["KilnConv"], 52);
  EXPECT_EQ(h["Clip"], 0);  // ReLU6 is fused.
  ExpectEveryNodeHasGpuLayer(*l.graph);
}

TEST(LowerTest, ShapesThatContradictTheModelFailClearly) {
  if (!fs::exists(ModelPath("resnet18"))) GTEST_SKIP() << "export models first";
  auto graph = onnx_import::ImportModelFile(ModelPath("resnet18").string());
  EXPECT_THROW(SpecializeShapes(*graph, {{"input", {8, 4, 224, 224}}}, nullptr), Error);
  EXPECT_THROW(SpecializeShapes(*graph, {{"input", {8, 3, 224}}}, nullptr), Error);
  EXPECT_THROW(SpecializeShapes(*graph, {{"nope", {1}}}, nullptr), Error);
}

}  // namespace
}  // namespace kiln::builder
