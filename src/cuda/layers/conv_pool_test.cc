// KilnConvPool (the fused stem) on the GPU against the CPU backend's Conv ->
// Relu -> MaxPool on the same float16-rounded values. The node and its packed
// weights come from the builder pass (src/builder/fuse_conv_pool.cc), as in
// an engine.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "builder/fuse_conv_pool.h"
#include "gpu_test_util.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln::gpu {
namespace {

using testing::RandomTensor;

struct StemCase {
  int64_t n, c, hw, k, kernel, pad, pool_pad;
  bool relu, bias;
};

ir::Attributes Attrs(std::vector<std::pair<std::string, ir::AttrValue>> values) {
  ir::Attributes a;
  for (auto& [k, v] : values) a.set(k, std::move(v));
  return a;
}

// The stem on the CPU in float32: Conv (+ Relu) + MaxPool.
Tensor CpuStem(const Tensor& x, const Tensor& w, const Tensor& b, const StemCase& s) {
  const int64_t p = s.pad, q = s.pool_pad;
  Tensor y = testing::RunNode("Conv", {x, w, b},
                              Attrs({{"strides", std::vector<int64_t>{2, 2}},
                                     {"pads", std::vector<int64_t>{p, p, p, p}}}))[0];
  if (s.relu) y = testing::RunNode("Relu", {y}, {})[0];
  return testing::RunNode("MaxPool", {y},
                          Attrs({{"kernel_shape", std::vector<int64_t>{3, 3}},
                                 {"strides", std::vector<int64_t>{2, 2}},
                                 {"pads", std::vector<int64_t>{q, q, q, q}}}))[0];
}

// The KilnConvPool node FuseConvPool makes for this stem (x float32 with the
// Cast to float16, or float16).
const ir::Node* FusedNode(ir::Graph& g, const Tensor& w16, const Tensor& b16, const StemCase& s,
                          DType x_dtype) {
  ir::Value* x = g.AddValue("x", {x_dtype, ir::ShapeFromDims({s.n, s.c, s.hw, s.hw})});
  x->is_graph_input = true;
  g.inputs().push_back(x);
  auto add = [&](const std::string& op, std::vector<ir::Value*> in) {
    ir::Value* out = g.AddValue(op + "_out");
    g.AddNode(op, op, std::move(in), {out})->opset = 17;
    return out;
  };
  ir::Value* half = x;
  if (x_dtype == DType::kFloat32) {
    half = add("Cast", {x});
    half->producer->attrs.set("to", int64_t{10});
  }
  std::vector<ir::Value*> conv_in = {half, g.AddConstant("w", w16)};
  if (s.bias) conv_in.push_back(g.AddConstant("b", b16));
  ir::Value* v = add("Conv", conv_in);
  v->producer->attrs.set("strides", std::vector<int64_t>{2, 2});
  v->producer->attrs.set("pads", std::vector<int64_t>{s.pad, s.pad, s.pad, s.pad});
  if (s.relu) v = add("Relu", {v});
  ir::Value* y = add("MaxPool", {v});
  y->producer->attrs.set("kernel_shape", std::vector<int64_t>{3, 3});
  y->producer->attrs.set("strides", std::vector<int64_t>{2, 2});
  y->producer->attrs.set("pads",
                         std::vector<int64_t>{s.pool_pad, s.pool_pad, s.pool_pad, s.pool_pad});
  g.outputs().push_back(y);
  passes::InferShapes(g);
  if (builder::FuseConvPool(g) != 1 || g.nodes().size() != 1) return nullptr;
  return g.nodes()[0].get();
}

TEST(GpuConvPoolTest, MatchesConvReluMaxPoolOnTheCpu) {
  KILN_REQUIRE_GPU();
  const std::vector<StemCase> cases = {
      {2, 3, 37, 64, 7, 3, 1, true, true},    // ResNet's stem, tiles cut by the edges.
      {1, 3, 224, 64, 7, 3, 1, true, true},   // ResNet-50's own shape.
      {3, 1, 30, 32, 3, 1, 0, false, false},  // 3x3, one channel, no pool padding, no ReLU.
      {1, 4, 21, 48, 5, 2, 1, true, true},    // 4 channels, 48 outputs.
  };
  uint32_t seed = 10;
  for (const StemCase& s : cases) {
    for (DType x_dtype : {DType::kFloat32, DType::kFloat16}) {
      SCOPED_TRACE(::testing::Message() << "n " << s.n << " c " << s.c << " hw " << s.hw << " k "
                                        << s.k << " kernel " << s.kernel << " x "
                                        << DTypeName(x_dtype));
      // Values rounded to float16, as the kernel reads them.
      const Tensor x = RandomTensor({s.n, s.c, s.hw, s.hw}, -2, 2, seed++)
                           .CastTo(DType::kFloat16).CastTo(DType::kFloat32);
      const Tensor w16 =
          RandomTensor({s.k, s.c, s.kernel, s.kernel}, -0.3f, 0.3f, seed++).CastTo(DType::kFloat16);
      const Tensor b16 = RandomTensor({s.k}, -0.5f, 0.5f, seed++).CastTo(DType::kFloat16);
      const Tensor expected = CpuStem(x, w16.CastTo(DType::kFloat32),
                                      s.bias ? b16.CastTo(DType::kFloat32) : Tensor(), s);
      ir::Graph g;
      const ir::Node* node = FusedNode(g, w16, b16, s, x_dtype);
      ASSERT_NE(node, nullptr) << "the pass did not fuse the stem";
      std::vector<Tensor> inputs = {x.CastTo(x_dtype), node->inputs[1]->constant};
      if (s.bias) inputs.push_back(node->inputs[2]->constant);
      testing::GpuNodeOptions options;
      options.output_types = {node->outputs[0]->type};
      options.output_layouts = {Layout::kNHWC};
      options.constant_inputs = {false, true, true};
      const auto runs = testing::RunNodeOnGpu("KilnConvPool", inputs, node->attrs, options);
      ASSERT_EQ(runs.size(), 2u);  // Both tile tactics.
      for (size_t tactic = 0; tactic < runs.size(); ++tactic) {
        const Tensor got = runs[tactic][0].CastTo(DType::kFloat32);
        ASSERT_EQ(got.dims(), expected.dims());
        for (int64_t i = 0; i < got.numel(); ++i) {
          const float want = expected.data<float>()[i], have = got.data<float>()[i];
          ASSERT_FALSE(std::isnan(have)) << "tactic " << tactic << " element " << i
                                         << " not written";
          ASSERT_LE(std::fabs(have - want), 2e-3 + 2e-3 * std::fabs(want))
              << "tactic " << tactic << " element " << i;
        }
      }
    }
  }
}

TEST(GpuConvPoolTest, ImageInputNormalizesAsTheNormalizeNode) {
  KILN_REQUIRE_GPU();
  const StemCase s{2, 3, 33, 64, 7, 3, 1, true, true};
  Tensor images(DType::kUInt8, {s.n, s.hw, s.hw, s.c});
  const Tensor noise = RandomTensor({images.numel()}, 0, 255.99f, 41);
  for (int64_t i = 0; i < images.numel(); ++i)
    images.data<uint8_t>()[i] = static_cast<uint8_t>(noise.data<float>()[i]);
  const std::vector<float> mean = {0.485f, 0.456f, 0.406f}, std = {0.229f, 0.224f, 0.225f};
  // The CPU reference: (x / 255 - mean) / std (include/kiln/image.h) into
  // NCHW, rounded to float16 (the engine's cast), then the stem.
  Tensor normalized(DType::kFloat32, {s.n, s.c, s.hw, s.hw});
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t p = 0; p < s.hw * s.hw; ++p)
        normalized.data<float>()[(n * s.c + c) * s.hw * s.hw + p] =
            (static_cast<float>(images.data<uint8_t>()[(n * s.hw * s.hw + p) * s.c + c]) / 255.f -
             mean[static_cast<size_t>(c)]) /
            std[static_cast<size_t>(c)];
  const Tensor x = normalized.CastTo(DType::kFloat16).CastTo(DType::kFloat32);
  const Tensor w16 = RandomTensor({s.k, s.c, 7, 7}, -0.3f, 0.3f, 42).CastTo(DType::kFloat16);
  const Tensor b16 = RandomTensor({s.k}, -0.5f, 0.5f, 43).CastTo(DType::kFloat16);
  const Tensor expected =
      CpuStem(x, w16.CastTo(DType::kFloat32), b16.CastTo(DType::kFloat32), s);
  ir::Graph g;
  const ir::Node* node = FusedNode(g, w16, b16, s, DType::kFloat32);
  ASSERT_NE(node, nullptr);
  ir::Attributes attrs = node->attrs;
  attrs.set("mean", mean);
  attrs.set("std", std);
  testing::GpuNodeOptions options;
  options.output_types = {node->outputs[0]->type};
  options.output_layouts = {Layout::kNHWC};
  const auto runs = testing::RunNodeOnGpu(
      "KilnConvPool", {images, node->inputs[1]->constant, node->inputs[2]->constant}, attrs,
      options);
  for (const auto& run : runs) {
    const Tensor got = run[0].CastTo(DType::kFloat32);
    ASSERT_EQ(got.dims(), expected.dims());
    for (int64_t i = 0; i < got.numel(); ++i)
      ASSERT_LE(std::fabs(got.data<float>()[i] - expected.data<float>()[i]),
                2e-3 + 2e-3 * std::fabs(expected.data<float>()[i]))
          << "element " << i;
  }
}

TEST(GpuConvPoolTest, RejectsShapesTheKernelDoesNotTake) {
  KILN_REQUIRE_GPU();
  const StemCase s{1, 3, 20, 64, 7, 3, 1, true, true};
  ir::Graph g;
  const Tensor w16 = RandomTensor({64, 3, 7, 7}, -0.3f, 0.3f, 5).CastTo(DType::kFloat16);
  const Tensor b16 = RandomTensor({64}, -0.5f, 0.5f, 6).CastTo(DType::kFloat16);
  const ir::Node* node = FusedNode(g, w16, b16, s, DType::kFloat32);
  ASSERT_NE(node, nullptr);
  testing::GpuNodeOptions options;
  options.output_types = {node->outputs[0]->type};
  options.output_layouts = {Layout::kNHWC};
  const Tensor x = RandomTensor({1, 3, 20, 20}, -1, 1, 7);
  // A row-major output is not what the kernel writes.
  testing::GpuNodeOptions row_major = options;
  row_major.output_layouts = {};
  EXPECT_THROW(testing::RunNodeOnGpu("KilnConvPool",
                                     {x, node->inputs[1]->constant, node->inputs[2]->constant},
                                     node->attrs, row_major),
               Error);
  // Weights not packed for a 7x7 kernel.
  EXPECT_THROW(testing::RunNodeOnGpu("KilnConvPool",
                                     {x, w16.Reshaped({64, 147}), node->inputs[2]->constant},
                                     node->attrs, options),
               Error);
}

}  // namespace
}  // namespace kiln::gpu
