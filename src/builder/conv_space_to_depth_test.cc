// The space-to-depth rewrite runs on the CPU: the rewritten graph (ordinary
// ONNX Pad + SpaceToDepth + Conv) must give the original convolution's
// results on the CPU backend; convolutions outside the pattern stay as they
// are; after layout assignment the data movement folds into one
// KilnPadSpaceToDepth node that reads the model input directly.
#include "builder/conv_space_to_depth.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "builder/fuse_conv_gemm.h"
#include "builder/lower.h"
#include "cpu/executor.h"
#include "onnx/importer.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln::builder {
namespace {

namespace fs = std::filesystem;
using kiln::testing::MaxRelativeError;
using kiln::testing::RandomTensor;
using Ints = std::vector<int64_t>;

constexpr int kOpset = 17;

struct ConvCase {
  int64_t n = 1, c = 3, h = 7, w = 9, k = 8, kh = 3, kw = 3;
  Ints strides = {2, 2};
  Ints pads = {1, 1, 1, 1};
  Ints dilations = {1, 1};
  int64_t group = 1;
  std::string auto_pad;  // Set: used instead of pads.
  bool bias = true;
  bool relu = false;
  bool constant_weights = true;
  DType dtype = DType::kFloat32;

  std::string Describe() const {
    return StrCat("x[", n, ",", c, ",", h, ",", w, "] w[", k, ",", c / group, ",", kh, ",", kw,
                  "] strides ", DimsToString(strides), " pads ",
                  auto_pad.empty() ? DimsToString(pads) : auto_pad, " dilations ",
                  DimsToString(dilations), " group ", group, bias ? " bias" : "",
                  relu ? " relu" : "", " ", DTypeName(dtype));
  }
};

ir::Value* AddInput(ir::Graph& g, const std::string& name, const Ints& dims, DType dtype) {
  ir::Value* v = g.AddValue(name, {dtype, ir::ShapeFromDims(dims)});
  v->is_graph_input = true;
  g.inputs().push_back(v);
  return v;
}

// x -> Conv [-> Relu] -> y, with random constant weights (seeded).
std::unique_ptr<ir::Graph> MakeConvGraph(const ConvCase& cc) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = kOpset;
  ir::Value* x = AddInput(*g, "x", {cc.n, cc.c, cc.h, cc.w}, cc.dtype);
  const Ints w_dims = {cc.k, cc.c / cc.group, cc.kh, cc.kw};
  ir::Value* w = cc.constant_weights
                     ? g->AddConstant("w", RandomTensor(w_dims, -1, 1, 2).CastTo(cc.dtype))
                     : AddInput(*g, "w", w_dims, cc.dtype);
  std::vector<ir::Value*> inputs = {x, w};
  if (cc.bias)
    inputs.push_back(g->AddConstant("b", RandomTensor({cc.k}, -1, 1, 3).CastTo(cc.dtype)));
  ir::Value* y = g->AddValue("y");
  ir::Node* conv = g->AddNode("Conv", "conv1", inputs, {y});
  conv->attrs.set("strides", cc.strides);
  conv->attrs.set("dilations", cc.dilations);
  conv->attrs.set("group", cc.group);
  if (cc.auto_pad.empty()) {
    conv->attrs.set("pads", cc.pads);
  } else {
    conv->attrs.set("auto_pad", cc.auto_pad);
  }
  if (cc.relu) {
    ir::Value* r = g->AddValue("relu");
    g->AddNode("Relu", "relu1", {y}, {r});
    y = r;
  }
  g->outputs().push_back(y);
  passes::InferShapes(*g);
  return g;
}

std::map<std::string, Tensor> Inputs(const ConvCase& cc) {
  std::map<std::string, Tensor> in;
  in["x"] = RandomTensor({cc.n, cc.c, cc.h, cc.w}, -1, 1, 7).CastTo(cc.dtype);
  if (!cc.constant_weights)
    in["w"] = RandomTensor({cc.k, cc.c / cc.group, cc.kh, cc.kw}, -1, 1, 2).CastTo(cc.dtype);
  return in;
}

Tensor RunCpu(const ir::Graph& g, const std::map<std::string, Tensor>& inputs) {
  cpu::Executor executor(g);
  std::vector<Tensor> out = executor.Run(inputs);
  EXPECT_EQ(out.size(), 1u);
  return out.at(0);
}

std::vector<std::string> OpTypes(const ir::Graph& g) {
  std::vector<std::string> ops;
  for (const auto& n : g.nodes()) ops.push_back(n->op_type);
  return ops;
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

// Rewrites a fresh copy of the case's graph and expects the CPU results of
// the original.
void ExpectRewriteMatches(const ConvCase& cc, double tolerance = 1e-5) {
  SCOPED_TRACE(cc.Describe());
  const std::map<std::string, Tensor> inputs = Inputs(cc);
  std::unique_ptr<ir::Graph> original = MakeConvGraph(cc);
  const Tensor want = RunCpu(*original, inputs);

  std::unique_ptr<ir::Graph> g = MakeConvGraph(cc);
  ASSERT_EQ(ConvSpaceToDepth(*g), 1);
  ASSERT_NO_THROW(g->Validate());
  const std::vector<std::string> expected_ops =
      cc.relu ? std::vector<std::string>{"Pad", "SpaceToDepth", "Conv", "Relu"}
              : std::vector<std::string>{"Pad", "SpaceToDepth", "Conv"};
  EXPECT_EQ(OpTypes(*g), expected_ops);
  const ir::Node* conv = FindOp(*g, "Conv");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->name, "conv1");
  EXPECT_EQ(conv->attrs.GetInts("strides"), (Ints{1, 1}));
  EXPECT_EQ(conv->attrs.GetInts("kernel_shape"), (Ints{(cc.kh + 1) / 2, (cc.kw + 1) / 2}));
  EXPECT_EQ(conv->inputs.size(), cc.bias ? 3u : 2u);
  // Channels a multiple of 8 for tensor cores.
  EXPECT_EQ(conv->inputs[1]->constant.dim(1) % 8, 0);
  // The recorded types agree with fresh shape inference.
  std::map<const ir::Value*, std::string> recorded;
  for (const auto& v : g->values()) recorded[v.get()] = v->type.ToString();
  passes::InferShapes(*g);
  for (const auto& v : g->values()) EXPECT_EQ(v->type.ToString(), recorded[v.get()]) << v->name;

  const Tensor got = RunCpu(*g, inputs);
  ASSERT_EQ(got.dims(), want.dims());
  ASSERT_EQ(got.dtype(), want.dtype());
  EXPECT_LE(MaxRelativeError(got, want), tolerance);
  // Idempotent: the new conv has stride 1.
  EXPECT_EQ(ConvSpaceToDepth(*g), 0);
}

TEST(ConvSpaceToDepth, ResnetStemMatchesCpu) {
  ConvCase cc;
  cc.n = 2;
  cc.h = cc.w = 224;
  cc.k = 64;
  cc.kh = cc.kw = 7;
  cc.pads = {3, 3, 3, 3};
  cc.relu = true;
  ExpectRewriteMatches(cc);

  // The rewritten form, spelled out.
  std::unique_ptr<ir::Graph> g = MakeConvGraph(cc);
  ASSERT_EQ(ConvSpaceToDepth(*g), 1);
  const ir::Node* pad = FindOp(*g, "Pad");
  ASSERT_NE(pad, nullptr);
  ASSERT_TRUE(pad->inputs[1]->is_constant());
  // Channels 3 -> 4; 224 + 3 + 3 -> 230 (what a 4x4 kernel over a 115x115 grid reads).
  EXPECT_EQ(pad->inputs[1]->constant.ToInt64Vector(), (Ints{0, 0, 3, 3, 0, 1, 3, 3}));
  EXPECT_EQ(pad->name, "conv1_s2d_pad");
  const ir::Node* s2d = FindOp(*g, "SpaceToDepth");
  ASSERT_NE(s2d, nullptr);
  EXPECT_EQ(s2d->attrs.GetInt("blocksize"), 2);
  EXPECT_EQ(ir::KnownDims(*s2d->outputs[0]->type.shape), (Ints{2, 16, 115, 115}));
  EXPECT_EQ(s2d->name, "conv1_s2d");
  const ir::Node* conv = FindOp(*g, "Conv");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->inputs[1]->constant.dims(), (Ints{64, 16, 4, 4}));
  EXPECT_EQ(conv->attrs.GetInts("pads"), (Ints{0, 0, 0, 0}));
  EXPECT_EQ(conv->outputs[0]->name, "y");
  EXPECT_EQ(ir::KnownDims(*conv->outputs[0]->type.shape), (Ints{2, 64, 112, 112}));
}

TEST(ConvSpaceToDepth, OddSizesKernelsPadsAndBias) {
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{7, 9}, {223, 221}, {8, 8}, {5, 6}};
  for (const auto& [h, w] : sizes) {
    for (int64_t kernel : {3, 5, 7}) {
      for (bool bias : {true, false}) {
        ConvCase cc;
        cc.h = h;
        cc.w = w;
        cc.kh = cc.kw = kernel;
        cc.bias = bias;
        cc.pads = {kernel / 2, kernel / 2, kernel / 2, kernel / 2};
        ExpectRewriteMatches(cc);
        // Asymmetric pads: top, left, bottom, right all different.
        cc.pads = {kernel / 2, 0, 1, kernel / 2 + 1};
        ExpectRewriteMatches(cc);
        cc.pads = {0, 0, 0, 0};
        if (h >= kernel && w >= kernel) ExpectRewriteMatches(cc);
      }
    }
  }
}

TEST(ConvSpaceToDepth, RectangularKernelsChannelCountsAndBatch) {
  for (int64_t c = 1; c <= kSpaceToDepthMaxInputChannels; ++c) {
    ConvCase cc;
    cc.n = 3;
    cc.c = c;
    cc.h = 11;
    cc.w = 13;
    cc.kh = 3;
    cc.kw = 5;
    cc.pads = {1, 2, 2, 1};
    ExpectRewriteMatches(cc);
    cc.kh = 2;  // Even kernels that read every row: a 2x2 / 2x4 patchify.
    cc.kw = 4;
    cc.pads = {1, 1, 1, 1};
    ExpectRewriteMatches(cc);
  }
}

TEST(ConvSpaceToDepth, AutoPad) {
  for (const char* mode : {"SAME_UPPER", "SAME_LOWER", "VALID"}) {
    for (int64_t kernel : {3, 7}) {
      ConvCase cc;
      cc.h = 13;
      cc.w = 10;
      cc.kh = cc.kw = kernel;
      cc.auto_pad = mode;
      ExpectRewriteMatches(cc);
    }
  }
}

TEST(ConvSpaceToDepth, Float16Graph) {
  ConvCase cc;
  cc.n = 2;
  cc.h = 31;
  cc.w = 30;
  cc.k = 16;
  cc.kh = cc.kw = 7;
  cc.pads = {3, 3, 3, 3};
  cc.dtype = DType::kFloat16;
  // Both compute in float32 and round the result to float16 once.
  ExpectRewriteMatches(cc, 2e-3);
}

TEST(ConvSpaceToDepth, LeavesOtherConvolutionsAlone) {
  std::vector<ConvCase> cases;
  ConvCase base;
  base.h = 12;
  base.w = 12;
  {
    ConvCase cc = base;  // Stride 1.
    cc.strides = {1, 1};
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Stride (2, 1).
    cc.strides = {2, 1};
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Stride 4.
    cc.strides = {4, 4};
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Grouped.
    cc.c = 4;
    cc.k = 4;
    cc.group = 2;
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Too many input channels.
    cc.c = 16;
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Just above the limit.
    cc.c = kSpaceToDepthMaxInputChannels + 1;
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Dilated.
    cc.dilations = {2, 2};
    cc.pads = {2, 2, 2, 2};
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Weights computed at run time.
    cc.constant_weights = false;
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // 1x1: nothing to gain.
    cc.kh = cc.kw = 1;
    cc.pads = {0, 0, 0, 0};
    cases.push_back(cc);
  }
  {
    ConvCase cc = base;  // Even kernel leaving the last row unread: would need a crop.
    cc.h = 7;
    cc.w = 7;
    cc.kh = cc.kw = 2;
    cc.pads = {0, 0, 0, 0};
    cases.push_back(cc);
  }
  for (const ConvCase& cc : cases) {
    SCOPED_TRACE(cc.Describe());
    std::unique_ptr<ir::Graph> g = MakeConvGraph(cc);
    EXPECT_EQ(ConvSpaceToDepth(*g), 0);
    EXPECT_EQ(OpTypes(*g), std::vector<std::string>{"Conv"});
  }
}

// The build pipeline's passes up to layer creation (as Engine::Build runs
// them), on a graph.
std::unordered_map<const ir::Value*, gpu::Layout> Lower(ir::Graph& g, DType low, bool nhwc) {
  AssignPrecision(g, low);
  ConvSpaceToDepth(g);
  FuseConvEpilogues(g);
  g.SortTopologically();
  g.RemoveUnusedValues();
  std::unordered_map<const ir::Value*, gpu::Layout> layouts = AssignLayouts(g, nhwc);
  MergeCastsIntoLayoutChanges(g, layouts);
  FusePadSpaceToDepth(g, layouts);
  g.SortTopologically();
  g.Validate();
  return layouts;
}

void ExpectEveryNodeHasGpuLayer(const ir::Graph& g) {
  for (const auto& n : g.nodes())
    EXPECT_NE(gpu::GpuLayerRegistry::Global().Find(n->op_type), nullptr) << n->Describe();
}

TEST(FusePadSpaceToDepth, Fp16NhwcReadsTheModelInputInOneLayer) {
  ConvCase cc;
  cc.n = 2;
  cc.h = cc.w = 32;
  cc.k = 16;
  cc.kh = cc.kw = 7;
  cc.pads = {3, 3, 3, 3};
  cc.relu = true;
  std::unique_ptr<ir::Graph> g = MakeConvGraph(cc);
  std::unordered_map<const ir::Value*, gpu::Layout> layouts = Lower(*g, DType::kFloat16, true);
  auto h = Histogram(*g);
  EXPECT_EQ(h["KilnPadSpaceToDepth"], 1);
  EXPECT_EQ(h["KilnConv"], 1);  // Bias and ReLU fused into the new convolution.
  EXPECT_EQ(h["Pad"] + h["SpaceToDepth"] + h["KilnToNHWC"] + h["Relu"], 0);
  EXPECT_EQ(h["Cast"], 0);  // The input cast is folded in; the output's into KilnToRowMajor.
  ExpectEveryNodeHasGpuLayer(*g);
  const ir::Node* s2d = FindOp(*g, "KilnPadSpaceToDepth");
  ASSERT_NE(s2d, nullptr);
  EXPECT_EQ(s2d->name, "conv1_s2d");  // Named after the convolution, for profiles.
  EXPECT_EQ(s2d->inputs[0], g->inputs()[0]);
  EXPECT_EQ(s2d->attrs.GetInts("pads"), (Ints{0, 0, 3, 3, 0, 1, 3, 3}));
  EXPECT_EQ(s2d->attrs.GetInt("blocksize"), 2);
  const ir::Value* out = s2d->outputs[0];
  EXPECT_EQ(out->type.dtype, DType::kFloat16);
  EXPECT_EQ(ir::KnownDims(*out->type.shape), (Ints{2, 16, 19, 19}));
  ASSERT_EQ(layouts.count(out), 1u);
  EXPECT_EQ(layouts.at(out), gpu::Layout::kNHWC);
  const ir::Node* conv = FindOp(*g, "KilnConv");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->inputs[0], out);
  EXPECT_EQ(conv->attrs.GetString("activation"), "Relu");
  // Every value the layout map names is still in the graph.
  for (const auto& [v, layout] : layouts) {
    bool alive = false;
    for (const auto& value : g->values()) alive |= value.get() == v;
    EXPECT_TRUE(alive);
  }
}

TEST(FusePadSpaceToDepth, Fp32NchwWritesRowMajor) {
  ConvCase cc;
  cc.h = cc.w = 20;
  cc.kh = cc.kw = 5;
  cc.pads = {2, 2, 2, 2};
  std::unique_ptr<ir::Graph> g = MakeConvGraph(cc);
  std::unordered_map<const ir::Value*, gpu::Layout> layouts = Lower(*g, DType::kFloat32, false);
  EXPECT_TRUE(layouts.empty());
  auto h = Histogram(*g);
  EXPECT_EQ(h["KilnPadSpaceToDepth"], 1);
  EXPECT_EQ(h["Pad"] + h["SpaceToDepth"] + h["KilnToNHWC"] + h["Cast"], 0);
  ExpectEveryNodeHasGpuLayer(*g);
  const ir::Node* s2d = FindOp(*g, "KilnPadSpaceToDepth");
  ASSERT_NE(s2d, nullptr);
  EXPECT_EQ(s2d->outputs[0]->type.dtype, DType::kFloat32);
  // FP32 with NHWC convolutions: the layout change folds in too.
  g = MakeConvGraph(cc);
  layouts = Lower(*g, DType::kFloat32, true);
  h = Histogram(*g);
  EXPECT_EQ(h["KilnPadSpaceToDepth"], 1);
  EXPECT_EQ(h["KilnToNHWC"], 0);
  s2d = FindOp(*g, "KilnPadSpaceToDepth");
  ASSERT_NE(s2d, nullptr);
  ASSERT_EQ(layouts.count(s2d->outputs[0]), 1u);
}

// A Pad -> SpaceToDepth pair built by hand, for the cases the fusion must skip.
struct PadGraph {
  ir::Graph g;
  ir::Node* pad = nullptr;
  ir::Node* s2d = nullptr;

  PadGraph(const std::string& mode, float value, bool second_consumer) {
    g.opset_version = kOpset;
    ir::Value* x = AddInput(g, "x", {1, 3, 6, 6}, DType::kFloat32);
    ir::Value* pads = g.AddConstant("pads", Tensor::FromInt64s({8}, {0, 0, 1, 1, 0, 1, 1, 1}));
    ir::Value* fill = g.AddConstant("fill", Tensor::Scalar(value));
    ir::Value* padded = g.AddValue("padded");
    pad = g.AddNode("Pad", "pad", {x, pads, fill}, {padded});
    pad->attrs.set("mode", mode);
    ir::Value* blocks = g.AddValue("blocks");
    s2d = g.AddNode("SpaceToDepth", "s2d", {padded}, {blocks});
    s2d->attrs.set("blocksize", int64_t{2});
    g.outputs().push_back(blocks);
    if (second_consumer) {
      ir::Value* other = g.AddValue("other");
      g.AddNode("Relu", "relu", {padded}, {other});
      g.outputs().push_back(other);
    }
    passes::InferShapes(g);
  }
};

TEST(FusePadSpaceToDepth, FusesZeroPadsOnlyWhenAlone) {
  std::unordered_map<const ir::Value*, gpu::Layout> layouts;
  {
    PadGraph pg("constant", 0.f, false);
    EXPECT_EQ(FusePadSpaceToDepth(pg.g, layouts), 1);
    EXPECT_EQ(OpTypes(pg.g), std::vector<std::string>{"KilnPadSpaceToDepth"});
    EXPECT_EQ(FindOp(pg.g, "KilnPadSpaceToDepth")->attrs.GetInts("pads"),
              (Ints{0, 0, 1, 1, 0, 1, 1, 1}));
    EXPECT_NO_THROW(pg.g.Validate());
  }
  {
    PadGraph pg("constant", 0.5f, false);  // Non-zero fill.
    EXPECT_EQ(FusePadSpaceToDepth(pg.g, layouts), 0);
  }
  {
    PadGraph pg("reflect", 0.f, false);
    EXPECT_EQ(FusePadSpaceToDepth(pg.g, layouts), 0);
  }
  {
    PadGraph pg("constant", 0.f, true);  // The padded tensor is used elsewhere.
    EXPECT_EQ(FusePadSpaceToDepth(pg.g, layouts), 0);
  }
}

fs::path ModelPath(const std::string& name) {
  const char* env = std::getenv("KILN_MODELS_DIR");
  fs::path dir = env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
  return dir / (name + ".onnx");
}

TEST(ConvSpaceToDepth, Resnet18OnCpuMatchesAndLowersToOneInputLayer) {
  if (!fs::exists(ModelPath("resnet18")))
    GTEST_SKIP() << "export models first (scripts/export_models.py)";
  auto load = [] {
    auto g = onnx_import::ImportModelFile(ModelPath("resnet18").string());
    SpecializeShapes(*g, {{"input", {2, 3, 224, 224}}}, nullptr);
    passes::Optimize(*g);
    return g;
  };
  std::map<std::string, Tensor> inputs = {{"input", RandomTensor({2, 3, 224, 224}, -2, 2, 5)}};
  auto original = load();
  const Tensor want = RunCpu(*original, inputs);
  auto g = load();
  EXPECT_EQ(ConvSpaceToDepth(*g), 1);  // conv1 only.
  g->Validate();
  const Tensor got = RunCpu(*g, inputs);
  const double err = MaxRelativeError(got, want);
  std::cout << "    resnet18 logits, rewritten vs original: max|a-b|/max|b| = " << err << "\n";
  EXPECT_LE(err, 1e-4);

  auto lowered = load();
  Lower(*lowered, DType::kFloat16, true);
  auto h = Histogram(*lowered);
  EXPECT_EQ(h["KilnPadSpaceToDepth"], 1);
  EXPECT_EQ(h["KilnToNHWC"], 0);
  EXPECT_EQ(h["KilnConv"], 17);
  ExpectEveryNodeHasGpuLayer(*lowered);
}

}  // namespace
}  // namespace kiln::builder
