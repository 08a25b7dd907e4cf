// FuseConvPool on hand-built graphs (CPU: the pass and its weight packing;
// the kernel is checked against the CPU backend's Conv/Relu/MaxPool in
// src/cuda/layers/conv_pool_test.cc).
#include "builder/fuse_conv_pool.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda/kernels/conv_pool.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln::builder {
namespace {

using testing::RandomTensor;

// float32 input -> Cast(f16) -> Conv(stride 2) -> [Relu] -> MaxPool(3x3/2).
struct StemGraph {
  ir::Graph g;
  ir::Value* x = nullptr;
  ir::Value* y = nullptr;
  ir::Node* conv = nullptr;
  ir::Node* pool = nullptr;

  StemGraph(int64_t c, int64_t k, int64_t kernel, bool relu, bool extra_reader = false,
            int64_t conv_stride = 2, int64_t pool_kernel = 3) {
    x = g.AddValue("x", {DType::kFloat32, ir::ShapeFromDims({2, c, 20, 20})});
    x->is_graph_input = true;
    g.inputs().push_back(x);
    ir::Value* half = Add("Cast", {x}, "x16");
    half->producer->attrs.set("to", int64_t{10});  // FLOAT16
    ir::Value* w = g.AddConstant(
        "w", RandomTensor({k, c, kernel, kernel}, -1, 1, 1).CastTo(DType::kFloat16));
    ir::Value* b = g.AddConstant("b", RandomTensor({k}, -1, 1, 2).CastTo(DType::kFloat16));
    ir::Value* conv_out = Add("Conv", {half, w, b}, "conv");
    conv = conv_out->producer;
    conv->attrs.set("strides", std::vector<int64_t>{conv_stride, conv_stride});
    const int64_t p = kernel / 2;
    conv->attrs.set("pads", std::vector<int64_t>{p, p, p, p});
    ir::Value* pooled_in = relu ? Add("Relu", {conv_out}, "relu") : conv_out;
    y = Add("MaxPool", {pooled_in}, "pool");
    pool = y->producer;
    pool->attrs.set("kernel_shape", std::vector<int64_t>{pool_kernel, pool_kernel});
    pool->attrs.set("strides", std::vector<int64_t>{2, 2});
    pool->attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
    g.outputs().push_back(y);
    if (extra_reader) g.outputs().push_back(conv_out);
    passes::InferShapes(g);
  }

  ir::Value* Add(const std::string& op, std::vector<ir::Value*> inputs, const std::string& name) {
    ir::Value* out = g.AddValue(name);
    ir::Node* node = g.AddNode(op, name + "_" + op, std::move(inputs), {out});
    node->opset = 17;
    return out;
  }
};

TEST(FuseConvPool, StemBecomesOneNodeWithPackedWeights) {
  StemGraph sg(3, 64, 7, /*relu=*/true);
  const Tensor w = sg.conv->inputs[1]->constant.CastTo(DType::kFloat32);
  ASSERT_EQ(FuseConvPool(sg.g), 1);
  ASSERT_EQ(sg.g.nodes().size(), 1u);
  const ir::Node& n = *sg.g.nodes()[0];
  EXPECT_EQ(n.op_type, "KilnConvPool");
  EXPECT_EQ(n.inputs[0], sg.x);  // The Cast is absorbed: the kernel reads float32.
  EXPECT_EQ(n.outputs[0], sg.y);
  EXPECT_EQ(n.attrs.GetInts("kernel_shape"), (std::vector<int64_t>{7, 7}));
  EXPECT_EQ(n.attrs.GetInts("pads"), (std::vector<int64_t>{3, 3, 3, 3}));
  EXPECT_EQ(n.attrs.GetInts("pool_pads"), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(n.attrs.GetInt("relu"), 1);
  ASSERT_EQ(n.inputs.size(), 3u);
  const Tensor packed = n.inputs[1]->constant.CastTo(DType::kFloat32);
  const int64_t k_padded = gpu::conv_pool_kernels::PaddedK(7, 7);
  ASSERT_EQ(k_padded, 208);
  ASSERT_EQ(packed.dims(), (std::vector<int64_t>{64, k_padded}));
  // Every weight at (ky*kw + kx)*4 + c; the 4th channel and the tail are 0.
  for (int64_t k = 0; k < 64; ++k)
    for (int64_t i = 0; i < k_padded; ++i) {
      const int64_t tap = i / 4, c = i % 4;
      const float want =
          tap < 49 && c < 3 ? w.data<float>()[((k * 3 + c) * 7 + tap / 7) * 7 + tap % 7] : 0.f;
      ASSERT_EQ(packed.data<float>()[k * k_padded + i], want) << "k " << k << " i " << i;
    }
  sg.g.Validate();
}

TEST(FuseConvPool, WithoutReluAndSmallKernel) {
  StemGraph sg(1, 32, 3, /*relu=*/false);
  ASSERT_EQ(FuseConvPool(sg.g), 1);
  const ir::Node& n = *sg.g.nodes()[0];
  EXPECT_EQ(n.attrs.GetInt("relu"), 0);
  EXPECT_EQ(n.inputs[1]->constant.dims(), (std::vector<int64_t>{32, 48}));  // 9 taps * 4 -> 48.
}

TEST(FuseConvPool, LeavesOtherShapesAlone) {
  {
    StemGraph sg(8, 64, 7, true);  // More than 4 input channels.
    EXPECT_EQ(FuseConvPool(sg.g), 0);
  }
  {
    StemGraph sg(3, 24, 7, true);  // Output channels not a multiple of 16.
    EXPECT_EQ(FuseConvPool(sg.g), 0);
  }
  {
    StemGraph sg(3, 64, 7, true, /*extra_reader=*/true);  // The conv output is also read.
    EXPECT_EQ(FuseConvPool(sg.g), 0);
  }
  {
    StemGraph sg(3, 64, 7, true, false, /*conv_stride=*/2, /*pool_kernel=*/2);
    EXPECT_EQ(FuseConvPool(sg.g), 0);
  }
  {
    StemGraph sg(3, 64, 7, true, false, /*conv_stride=*/1);
    EXPECT_EQ(FuseConvPool(sg.g), 0);
  }
}

}  // namespace
}  // namespace kiln::builder
