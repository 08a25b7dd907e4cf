// GPU pooling against the CPU reference backend, row-major and NHWC.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "gpu_test_util.h"
#include "ops/registry.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::ExpectGpuMatchesCpu;
using testing::GpuNodeOptions;
using testing::RandomTensor;

ir::Attributes MakeAttrs(std::vector<std::pair<std::string, ir::AttrValue>> values) {
  ir::Attributes attrs;
  for (auto& [name, value] : values) attrs.set(name, std::move(value));
  return attrs;
}

GpuNodeOptions Opset(int opset, int num_outputs = 1) {
  GpuNodeOptions options;
  options.opset = opset;
  options.num_outputs = num_outputs;
  return options;
}

Tensor Half(const Tensor& t) { return t.CastTo(DType::kFloat16); }

std::vector<int64_t> Ints(std::initializer_list<int64_t> v) { return std::vector<int64_t>(v); }

TEST(GpuPoolTest, MaxPool2D) {
  KILN_REQUIRE_GPU();
  Tensor x = RandomTensor({2, 3, 9, 11}, -2.f, 2.f, 1);
  const std::vector<ir::Attributes> cases = {
      MakeAttrs({{"kernel_shape", Ints({3, 3})}, {"strides", Ints({2, 2})},
                 {"pads", Ints({1, 1, 1, 1})}}),
      MakeAttrs({{"kernel_shape", Ints({2, 3})}, {"strides", Ints({2, 2})},
                 {"ceil_mode", int64_t{1}}}),
      MakeAttrs({{"kernel_shape", Ints({2, 2})}, {"dilations", Ints({2, 3})},
                 {"pads", Ints({0, 2, 1, 0})}}),
      MakeAttrs({{"kernel_shape", Ints({3, 3})}, {"auto_pad", std::string("SAME_UPPER")},
                 {"strides", Ints({2, 2})}}),
      MakeAttrs({{"kernel_shape", Ints({3, 2})}, {"auto_pad", std::string("SAME_LOWER")}}),
      MakeAttrs({{"kernel_shape", Ints({9, 11})}}),
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "case " << i);
    ExpectGpuMatchesCpu("MaxPool", {x}, cases[i], Opset(12));
    ExpectGpuMatchesCpu("MaxPool", {Half(x)}, cases[i], Opset(12), 1e-2, 1e-3);
    ExpectGpuMatchesCpu("MaxPool", {x.CastTo(DType::kBFloat16)}, cases[i], Opset(12), 1e-2, 1e-3);
    // Indices, both storage orders.
    ExpectGpuMatchesCpu("MaxPool", {x}, cases[i], Opset(12, 2));
    ir::Attributes column_major = cases[i];
    column_major.set("storage_order", int64_t{1});
    ExpectGpuMatchesCpu("MaxPool", {x}, column_major, Opset(12, 2));
  }
  Tensor q = RandomTensor({1, 4, 7, 7}, -100.f, 100.f, 2).CastTo(DType::kInt8);
  ExpectGpuMatchesCpu("MaxPool", {q}, cases[0], Opset(12));
  Tensor u = RandomTensor({1, 4, 7, 7}, 0.f, 250.f, 3).CastTo(DType::kUInt8);
  ExpectGpuMatchesCpu("MaxPool", {u}, cases[1], Opset(12));
}

TEST(GpuPoolTest, MaxPool1DAnd3D) {
  KILN_REQUIRE_GPU();
  ir::Attributes a1 = MakeAttrs({{"kernel_shape", Ints({3})}, {"strides", Ints({2})},
                                 {"pads", Ints({1, 2})}});
  ExpectGpuMatchesCpu("MaxPool", {RandomTensor({2, 3, 17})}, a1, Opset(12, 2));
  ir::Attributes a3 = MakeAttrs({{"kernel_shape", Ints({2, 3, 2})},
                                 {"strides", Ints({1, 2, 2})},
                                 {"pads", Ints({0, 1, 1, 1, 1, 0})}});
  Tensor x3 = RandomTensor({2, 2, 5, 6, 7}, -1.f, 1.f, 4);
  ExpectGpuMatchesCpu("MaxPool", {x3}, a3, Opset(12, 2));
  ir::Attributes a3c = a3;
  a3c.set("storage_order", int64_t{1});
  ExpectGpuMatchesCpu("MaxPool", {x3}, a3c, Opset(12, 2));
  ExpectGpuMatchesCpu("MaxPool", {Half(x3)}, a3, Opset(12), 1e-2, 1e-3);
}

TEST(GpuPoolTest, AveragePool) {
  KILN_REQUIRE_GPU();
  Tensor x = RandomTensor({2, 3, 9, 11}, -2.f, 2.f, 5);
  const std::vector<ir::Attributes> cases = {
      MakeAttrs({{"kernel_shape", Ints({3, 3})}, {"strides", Ints({2, 2})},
                 {"pads", Ints({1, 1, 1, 1})}}),
      MakeAttrs({{"kernel_shape", Ints({3, 3})}, {"strides", Ints({2, 2})},
                 {"pads", Ints({1, 1, 1, 1})}, {"count_include_pad", int64_t{1}}}),
      MakeAttrs({{"kernel_shape", Ints({2, 3})}, {"strides", Ints({2, 2})},
                 {"ceil_mode", int64_t{1}}, {"count_include_pad", int64_t{1}}}),
      MakeAttrs({{"kernel_shape", Ints({3, 3})}, {"auto_pad", std::string("SAME_UPPER")}}),
      MakeAttrs({{"kernel_shape", Ints({2, 2})}, {"dilations", Ints({2, 2})},
                 {"pads", Ints({1, 0, 2, 1})}, {"count_include_pad", int64_t{1}}}),
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "case " << i);
    ExpectGpuMatchesCpu("AveragePool", {x}, cases[i], Opset(19), 1e-5, 1e-6);
    ExpectGpuMatchesCpu("AveragePool", {Half(x)}, cases[i], Opset(19), 1e-2, 1e-3);
  }
  ExpectGpuMatchesCpu("AveragePool", {RandomTensor({1, 2, 13})},
                      MakeAttrs({{"kernel_shape", Ints({4})}, {"pads", Ints({2, 2})},
                                 {"count_include_pad", int64_t{1}}}),
                      Opset(11), 1e-5, 1e-6);
  ExpectGpuMatchesCpu("AveragePool", {RandomTensor({1, 2, 4, 5, 6})},
                      MakeAttrs({{"kernel_shape", Ints({2, 2, 3})},
                                 {"strides", Ints({2, 1, 2})}}),
                      Opset(11), 1e-5, 1e-6);
}

TEST(GpuPoolTest, GlobalPools) {
  KILN_REQUIRE_GPU();
  for (const std::vector<int64_t>& dims :
       {Ints({2, 5, 7, 7}), Ints({1, 3, 5000}), Ints({2, 2, 3, 4, 5}), Ints({3, 1, 1, 1})}) {
    SCOPED_TRACE(DimsToString(dims));
    Tensor x = RandomTensor(dims, -2.f, 2.f, 6);
    for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
      ExpectGpuMatchesCpu(op, {x}, {}, Opset(1), 1e-5, 1e-5);
      ExpectGpuMatchesCpu(op, {Half(x)}, {}, Opset(1), 1e-2, 1e-3);
    }
  }
  ExpectGpuMatchesCpu("GlobalMaxPool",
                      {RandomTensor({2, 3, 4, 4}, -100.f, 100.f, 7).CastTo(DType::kInt8)}, {},
                      Opset(1));
}

// ---- NHWC: the layer sees a channels-last input and writes channels-last
// outputs; compare against the CPU on the NCHW tensor. ----

// Reorders a rank-4 tensor's elements between NCHW and NHWC (to_nhwc picks
// the direction); dims stay logical (N, C, H, W).
Tensor Permute(const Tensor& t, bool to_nhwc) {
  Tensor out(t.dtype(), t.dims());
  const int64_t n = t.dim(0), c = t.dim(1), h = t.dim(2), w = t.dim(3);
  const size_t es = DTypeSize(t.dtype());
  const auto* src = static_cast<const uint8_t*>(t.raw_data());
  auto* dst = static_cast<uint8_t*>(out.raw_data());
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ic = 0; ic < c; ++ic)
      for (int64_t ih = 0; ih < h; ++ih)
        for (int64_t iw = 0; iw < w; ++iw) {
          const int64_t nchw = ((in * c + ic) * h + ih) * w + iw;
          const int64_t nhwc = ((in * h + ih) * w + iw) * c + ic;
          const int64_t from = to_nhwc ? nchw : nhwc, to = to_nhwc ? nhwc : nchw;
          std::memcpy(dst + to * es, src + from * es, es);
        }
  return out;
}

using cuda::DeviceBuffer;

// Runs op_type on x (logical NCHW host tensor) through the GPU layer with an
// NHWC input; returns the outputs converted back to NCHW order.
std::vector<Tensor> RunNhwcOnGpu(const std::string& op_type, const Tensor& x,
                                 const ir::Attributes& attrs, int num_outputs, int opset = 12) {
  ir::Graph graph;
  graph.opset_version = opset;
  ir::Value* in = graph.AddValue("in0", ir::TensorType::Of(x));
  std::vector<ir::Value*> outs;
  for (int i = 0; i < num_outputs; ++i) outs.push_back(graph.AddValue("out" + std::to_string(i)));
  ir::Node* node = graph.AddNode(op_type, "test_" + op_type, {in}, outs);
  node->attrs = attrs;
  node->opset = opset;
  ir::TensorType in_type = ir::TensorType::Of(x);
  std::vector<ir::TensorType> out_types = InferNode(*node, {&in_type}, {&x});

  const gpu::GpuOpDef* def = gpu::GpuLayerRegistry::Global().Find(op_type);
  KILN_CHECK(def != nullptr && def->accepts_nhwc, op_type, " has no NHWC GPU layer");
  gpu::LayerInit init{*node, {}, {}, {nullptr}, {}, {}};
  gpu::TensorDesc xd;
  xd.dtype = x.dtype();
  xd.dims = x.dims();
  xd.layout = gpu::Layout::kNHWC;
  init.inputs.push_back(xd);
  for (const ir::TensorType& t : out_types) {
    gpu::TensorDesc d;
    d.dtype = t.dtype;
    d.dims = ir::KnownDims(*t.shape);
    d.layout = gpu::Layout::kNHWC;
    init.outputs.push_back(d);
  }
  std::unique_ptr<gpu::Layer> layer = def->create(init);

  Tensor x_nhwc = Permute(x, /*to_nhwc=*/true);
  DeviceBuffer x_dev(x_nhwc.nbytes());
  KILN_CUDA_CHECK(
      cudaMemcpy(x_dev.ptr, x_nhwc.raw_data(), x_nhwc.nbytes(), cudaMemcpyHostToDevice));
  std::vector<std::unique_ptr<DeviceBuffer>> out_dev;
  gpu::LaunchArgs args;
  args.inputs.push_back(x_dev.ptr);
  for (const gpu::TensorDesc& d : init.outputs) {
    out_dev.push_back(std::make_unique<DeviceBuffer>(d.nbytes()));
    if (d.nbytes()) KILN_CUDA_CHECK(cudaMemset(out_dev.back()->ptr, 0xFF, d.nbytes()));
    args.outputs.push_back(out_dev.back()->ptr);
  }
  layer->Enqueue(args);
  KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  KILN_CUDA_CHECK(cudaGetLastError());
  std::vector<Tensor> results;
  for (size_t o = 0; o < init.outputs.size(); ++o) {
    Tensor t(init.outputs[o].dtype, init.outputs[o].dims);
    if (t.nbytes())
      KILN_CUDA_CHECK(cudaMemcpy(t.raw_data(), args.outputs[o], t.nbytes(), cudaMemcpyDeviceToHost));
    results.push_back(Permute(t, /*to_nhwc=*/false));
  }
  return results;
}

void ExpectNhwcMatchesCpu(const std::string& op_type, const Tensor& x,
                          const ir::Attributes& attrs, int num_outputs, double rtol,
                          double atol) {
  Tensor x32 = x.dtype() == DType::kFloat16 ? x.CastTo(DType::kFloat32) : x;
  std::vector<Tensor> want = testing::RunNode(op_type, {x32}, attrs, num_outputs, 12);
  std::vector<Tensor> got = RunNhwcOnGpu(op_type, x, attrs, num_outputs);
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    SCOPED_TRACE(::testing::Message() << op_type << " output " << o);
    ASSERT_EQ(want[o].dims(), got[o].dims());
    if (want[o].dtype() == DType::kInt64) {
      ASSERT_EQ(got[o].dtype(), DType::kInt64);
      ASSERT_EQ(0, std::memcmp(got[o].raw_data(), want[o].raw_data(), want[o].nbytes()));
      continue;
    }
    Tensor g = got[o].CastTo(DType::kFloat64), w = want[o].CastTo(DType::kFloat64);
    for (int64_t i = 0; i < w.numel(); ++i) {
      const double a = g.data<double>()[i], b = w.data<double>()[i];
      ASSERT_FALSE(std::isnan(a)) << "element " << i << " not written";
      if (std::isinf(b)) {
        ASSERT_EQ(a, b) << "element " << i;
        continue;
      }
      ASSERT_LE(std::fabs(a - b), atol + rtol * std::fabs(b))
          << "element " << i << ": gpu " << a << " cpu " << b;
    }
  }
}

TEST(GpuPoolTest, Nhwc) {
  KILN_REQUIRE_GPU();
  Tensor x = RandomTensor({2, 5, 9, 11}, -2.f, 2.f, 11);
  ir::Attributes max_attrs = MakeAttrs({{"kernel_shape", Ints({3, 3})},
                                        {"strides", Ints({2, 2})},
                                        {"pads", Ints({1, 1, 1, 1})}});
  ExpectNhwcMatchesCpu("MaxPool", x, max_attrs, 2, 0, 0);
  ExpectNhwcMatchesCpu("MaxPool", Half(x), max_attrs, 1, 1e-2, 1e-3);
  ir::Attributes dilated = MakeAttrs({{"kernel_shape", Ints({2, 2})},
                                      {"dilations", Ints({2, 1})},
                                      {"ceil_mode", int64_t{1}},
                                      {"strides", Ints({2, 3})}});
  ExpectNhwcMatchesCpu("MaxPool", x, dilated, 1, 0, 0);
  ir::Attributes avg_attrs = MakeAttrs({{"kernel_shape", Ints({3, 3})},
                                        {"strides", Ints({2, 2})},
                                        {"pads", Ints({1, 1, 1, 1})},
                                        {"count_include_pad", int64_t{1}}});
  ExpectNhwcMatchesCpu("AveragePool", x, avg_attrs, 1, 1e-5, 1e-6);
  ExpectNhwcMatchesCpu("AveragePool", Half(x), avg_attrs, 1, 1e-2, 1e-3);
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    ExpectNhwcMatchesCpu(op, x, {}, 1, 1e-5, 1e-6);  // C = 5: scalar path.
    Tensor wide = RandomTensor({3, 64, 7, 7}, -2.f, 2.f, 12);  // C % 8 == 0: vector path.
    ExpectNhwcMatchesCpu(op, wide, {}, 1, 1e-5, 1e-6);
    ExpectNhwcMatchesCpu(op, Half(wide), {}, 1, 1e-2, 1e-3);
  }
  // ResNet-50's final pooling shape.
  ExpectNhwcMatchesCpu("GlobalAveragePool", Half(RandomTensor({256, 2048, 7, 7}, -1.f, 1.f, 13)),
                       {}, 1, 1e-2, 1e-3);
}

}  // namespace
}  // namespace kiln
