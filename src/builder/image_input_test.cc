// BuildConfig::image_input on the CPU (no GPU needed): the lowered graph takes
// uint8 [N,H,W,C] images under the input's name; a space-to-depth stem
// absorbs the normalization (one KilnPadSpaceToDepth reading the uint8
// binding with mean/std), other graphs keep a KilnNormalizeImage layer; bad
// settings fail naming the input; the option survives the engine file's JSON.
#include "builder/image_input.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "builder/lower.h"
#include "onnx/importer.h"
#include "passes/passes.h"
#include "runtime/engine_impl.h"
#include "test_util.h"

namespace kiln::builder {
namespace {

namespace fs = std::filesystem;
using kiln::testing::RandomTensor;
using Ints = std::vector<int64_t>;

// x [n, c, h, w] float -> Conv(k x k, stride, pads k/2, 16 out, bias) -> Relu -> y.
std::unique_ptr<ir::Graph> MakeStemGraph(const Ints& x_dims, int64_t k, int64_t stride) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = 17;
  ir::Value* x = g->AddValue("x", {DType::kFloat32, ir::ShapeFromDims(x_dims)});
  x->is_graph_input = true;
  g->inputs().push_back(x);
  ir::Value* w = g->AddConstant("w", RandomTensor({16, x_dims[1], k, k}, -0.2f, 0.2f, 2));
  ir::Value* b = g->AddConstant("b", RandomTensor({16}, -0.5f, 0.5f, 3));
  ir::Value* c = g->AddValue("c");
  ir::Node* conv = g->AddNode("Conv", "conv1", {x, w, b}, {c});
  conv->attrs.set("strides", Ints{stride, stride});
  conv->attrs.set("pads", Ints{k / 2, k / 2, k / 2, k / 2});
  ir::Value* y = g->AddValue("y");
  g->AddNode("Relu", "relu1", {c}, {y});
  g->outputs().push_back(y);
  passes::InferShapes(*g);
  return g;
}

struct Lowered {
  std::unordered_map<const ir::Value*, gpu::Layout> layouts;
  std::map<std::string, int> ops;
};

// What Engine::Build's lowering does with config.image_input = image.
Lowered LowerWithImageInput(ir::Graph& g, const ImageInput& image, Precision precision,
                            const InputShapes& shapes = {}) {
  Lowered l;
  ApplyImageInput(g, image);
  runtime::LoweringOptions options;
  options.precision = precision;
  LowerGraph(g, l.layouts, options, shapes, nullptr);
  for (const auto& n : g.nodes()) {
    l.ops[n->op_type]++;
    EXPECT_NE(gpu::GpuLayerRegistry::Global().Find(n->op_type), nullptr) << n->Describe();
  }
  return l;
}

const ir::Node* FindOp(const ir::Graph& g, const std::string& op) {
  for (const auto& n : g.nodes())
    if (n->op_type == op) return n.get();
  return nullptr;
}

ImageInput Images(const std::string& name) {
  ImageInput image;
  image.name = name;
  return image;
}

TEST(ImageInput, StemAbsorbsTheNormalizationInFp16AndFp32) {
  for (Precision precision : {Precision::kFP16, Precision::kFP32}) {
    SCOPED_TRACE(PrecisionName(precision));
    auto g = MakeStemGraph({2, 3, 37, 50}, 7, 2);
    ImageInput image = Images("x");
    image.mean = {0.5f, 0.25f, 0.125f};
    image.std = {0.2f, 0.3f, 0.4f};
    Lowered l = LowerWithImageInput(*g, image, precision);
    EXPECT_EQ(l.ops["KilnPadSpaceToDepth"], 1);
    EXPECT_EQ(l.ops["KilnNormalizeImage"], 0);
    EXPECT_EQ(l.ops["Cast"] + l.ops["Pad"] + l.ops["SpaceToDepth"], 0);
    if (precision == Precision::kFP16) EXPECT_EQ(l.ops["KilnToNHWC"], 0);
    // The binding: same name, uint8 [N, H, W, C].
    ASSERT_EQ(g->inputs().size(), 1u);
    const ir::Value* x = g->inputs()[0];
    EXPECT_EQ(x->name, "x");
    EXPECT_EQ(x->type.dtype, DType::kUInt8);
    EXPECT_EQ(ir::KnownDims(*x->type.shape), (Ints{2, 37, 50, 3}));
    const ir::Node* s2d = FindOp(*g, "KilnPadSpaceToDepth");
    ASSERT_NE(s2d, nullptr);
    EXPECT_EQ(s2d->inputs[0], x);
    EXPECT_EQ(s2d->attrs.GetFloats("mean"), image.mean);
    EXPECT_EQ(s2d->attrs.GetFloats("std"), image.std);
    // Odd 37 rows: one more bottom row for the 4x4 stride-1 kernel (50 columns: none).
    EXPECT_EQ(s2d->attrs.GetInts("pads"), (Ints{0, 0, 3, 3, 0, 1, 4, 3}));
    EXPECT_EQ(s2d->outputs[0]->type.dtype,
              precision == Precision::kFP16 ? DType::kFloat16 : DType::kFloat32);
    // The output keeps its name and float32 dtype.
    EXPECT_EQ(g->outputs()[0]->name, "y");
    EXPECT_EQ(g->outputs()[0]->type.dtype, DType::kFloat32);
  }
}

TEST(ImageInput, WithoutAStemTheNormalizeLayerRuns) {
  auto g = MakeStemGraph({1, 3, 16, 16}, 3, 1);  // Stride 1: no space-to-depth rewrite.
  Lowered l = LowerWithImageInput(*g, Images("x"), Precision::kFP16);
  EXPECT_EQ(l.ops["KilnPadSpaceToDepth"], 0);
  EXPECT_EQ(l.ops["KilnNormalizeImage"], 1);
  const ir::Node* normalize = FindOp(*g, "KilnNormalizeImage");
  ASSERT_NE(normalize, nullptr);
  EXPECT_EQ(normalize->inputs[0], g->inputs()[0]);
  EXPECT_EQ(normalize->inputs[0]->type.dtype, DType::kUInt8);
  EXPECT_EQ(ir::KnownDims(*normalize->outputs[0]->type.shape), (Ints{1, 3, 16, 16}));
  EXPECT_EQ(normalize->outputs[0]->type.dtype, DType::kFloat32);
  EXPECT_EQ(normalize->attrs.GetFloats("mean"), ImageNormalization().mean);
  EXPECT_EQ(normalize->attrs.GetFloats("std"), ImageNormalization().std);
  EXPECT_EQ(l.layouts.count(normalize->outputs[0]), 0u);  // Row-major NCHW.
}

TEST(ImageInput, ShapesGiveTheBindingDims) {
  // A dynamic batch: the shapes map names the uint8 binding's [N, H, W, C].
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = 17;
  ir::Value* x = g->AddValue("x", {DType::kFloat32, ir::Shape{ir::Dim::Symbol("batch"),
                                                              ir::Dim::Known(3), ir::Dim::Known(20),
                                                              ir::Dim::Known(24)}});
  x->is_graph_input = true;
  g->inputs().push_back(x);
  ir::Value* y = g->AddValue("y");
  g->AddNode("Relu", "relu", {x}, {y});
  g->outputs().push_back(y);
  passes::InferShapes(*g);
  LowerWithImageInput(*g, Images("x"), Precision::kFP32, {{"x", {5, 20, 24, 3}}});
  EXPECT_EQ(ir::KnownDims(*g->inputs()[0]->type.shape), (Ints{5, 20, 24, 3}));
  EXPECT_EQ(ir::KnownDims(*g->outputs()[0]->type.shape), (Ints{5, 3, 20, 24}));
}

TEST(ImageInput, BadSettingsNameTheInput) {
  auto expect_error = [](ImageInput image, const Ints& x_dims, const std::string& text) {
    auto g = MakeStemGraph(x_dims, 3, 2);
    try {
      ApplyImageInput(*g, image);
      ADD_FAILURE() << "no error for " << image.name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error(Images("nope"), {1, 3, 8, 8}, "image input 'nope' is not an input of the model (inputs: x)");
  expect_error(Images("x"), {1, 4, 8, 8}, "mean and std need 4 values each, got 3 and 3");
  ImageInput zero = Images("x");
  zero.std[1] = 0.f;
  expect_error(zero, {1, 3, 8, 8}, "channel 1 has mean");
  expect_error(Images("x"), {1, 9, 8, 8}, "1 to 8");
  // An off option changes nothing.
  auto g = MakeStemGraph({1, 3, 8, 8}, 3, 2);
  ApplyImageInput(*g, ImageInput{});
  EXPECT_EQ(g->inputs()[0]->type.dtype, DType::kFloat32);
}

TEST(ImageInput, EngineFileJsonRoundTrip) {
  ImageInput image = Images("input:0");
  image.mean = {0.1f, 0.2f, 0.30000001f, 1e-7f};
  image.std = {0.7f, 0.8f, 0.9f, 3.14159274f};
  const std::string text = ImageInputToJson(image).dump();
  const ImageInput back = ImageInputFromJson(nlohmann::json::parse(text));
  EXPECT_EQ(back, image);  // Exact floats.
  EXPECT_THROW(ImageInputFromJson(nlohmann::json::parse(R"({"name": "x"})")), Error);
  EXPECT_THROW(ImageInputFromJson(nlohmann::json::parse(R"({"name": 3, "mean": [], "std": []})")), Error);
}

fs::path ModelPath(const std::string& name) {
  const char* env = std::getenv("KILN_MODELS_DIR");
  fs::path dir = env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
  return dir / (name + ".onnx");
}

TEST(ImageInput, Resnet18Fp16TakesImagesIntoTheConvPoolStem) {
  if (!fs::exists(ModelPath("resnet18")))
    GTEST_SKIP() << "export models first (scripts/export_models.py)";
  auto g = onnx_import::ImportModelFile(ModelPath("resnet18").string());
  Lowered l = LowerWithImageInput(*g, Images("input"), Precision::kFP16, {{"input", {8, 224, 224, 3}}});
  // conv1 -> relu -> maxpool is one KilnConvPool reading the uint8 images.
  EXPECT_EQ(l.ops["KilnConvPool"], 1);
  EXPECT_EQ(l.ops["KilnPadSpaceToDepth"], 0);
  EXPECT_EQ(l.ops["KilnNormalizeImage"], 0);
  EXPECT_EQ(l.ops["MaxPool"], 0);
  EXPECT_EQ(l.ops["KilnToNHWC"], 0);
  const ir::Node* stem = FindOp(*g, "KilnConvPool");
  ASSERT_NE(stem, nullptr);
  EXPECT_EQ(stem->inputs[0], g->inputs()[0]);
  EXPECT_EQ(stem->inputs[0]->type.dtype, DType::kUInt8);
  EXPECT_EQ(ir::KnownDims(*stem->inputs[0]->type.shape), (Ints{8, 224, 224, 3}));
  EXPECT_EQ(stem->attrs.GetFloats("mean").size(), 3u);
  EXPECT_EQ(stem->outputs[0]->type.dtype, DType::kFloat16);
  EXPECT_EQ(ir::KnownDims(*stem->outputs[0]->type.shape), (Ints{8, 64, 56, 56}));
}

}  // namespace
}  // namespace kiln::builder
