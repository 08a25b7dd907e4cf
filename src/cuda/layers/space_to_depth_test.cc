// KilnPadSpaceToDepth (the builder's fused zero-pad + SpaceToDepth + cast +
// NHWC layer) against the CPU backend's Pad and SpaceToDepth; and engines
// with an RGB stem convolution (C=3, 7x7, stride 2), which the builder
// rewrites into that layer + a stride-1 convolution, against the CPU backend
// running the original model.
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "gpu_test_util.h"
#include "kiln/engine.h"
#include "kiln/kiln.h"
#include "onnx.pb.h"
#include "pipeline/scheduler.h"
#include "runtime/engine_impl.h"
#include "test_util.h"

namespace kiln {
namespace {

using cuda::DeviceBuffer;
using testing::MaxRelativeError;
using testing::RandomTensor;
using testing::RunNode;
using Ints = std::vector<int64_t>;

gpu::TensorDesc Desc(DType dtype, Ints dims, gpu::Layout layout = gpu::Layout::kRowMajor) {
  gpu::TensorDesc d;
  d.dtype = dtype;
  d.dims = std::move(dims);
  d.layout = layout;
  return d;
}

ir::Attributes S2dAttrs(const Ints& pads, int64_t blocksize) {
  ir::Attributes a;
  a.set("pads", pads);
  a.set("blocksize", blocksize);
  return a;
}

// Creates the layer for hand-made descriptors (throws like the builder would).
std::unique_ptr<gpu::Layer> CreateLayer(ir::Graph& graph, const gpu::TensorDesc& in,
                                        const gpu::TensorDesc& out, const ir::Attributes& attrs) {
  ir::Value* x = graph.AddValue("x", ir::TensorType{in.dtype, ir::ShapeFromDims(in.dims)});
  ir::Value* y = graph.AddValue("y", ir::TensorType{out.dtype, ir::ShapeFromDims(out.dims)});
  ir::Node* node = graph.AddNode("KilnPadSpaceToDepth", "s2d", {x}, {y});
  node->attrs = attrs;
  gpu::LayerInit init{*node, {in}, {out}, {nullptr}, {}, {}};
  const gpu::GpuOpDef* def = gpu::GpuLayerRegistry::Global().Find("KilnPadSpaceToDepth");
  KILN_CHECK(def, "no GPU layer for KilnPadSpaceToDepth");
  EXPECT_FALSE(def->accepts_nhwc);
  return def->create(init);
}

// Runs a one-input layer on `bytes` host bytes; returns the output in its
// memory order. The output buffer starts as 0xFF bytes (NaN for every float
// type), so an element left unwritten fails the comparison.
Tensor RunOneInputLayer(const gpu::Layer& layer, const void* in, size_t bytes,
                        const gpu::TensorDesc& out) {
  DeviceBuffer in_buffer(std::max<size_t>(bytes, 1));
  DeviceBuffer out_buffer(std::max<size_t>(out.nbytes(), 1));
  if (bytes) KILN_CUDA_CHECK(cudaMemcpy(in_buffer.ptr, in, bytes, cudaMemcpyHostToDevice));
  KILN_CUDA_CHECK(cudaMemset(out_buffer.ptr, 0xFF, std::max<size_t>(out.nbytes(), 1)));
  gpu::LaunchArgs args;
  args.inputs = {in_buffer.ptr};
  args.outputs = {out_buffer.ptr};
  layer.Enqueue(args);
  KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  KILN_CUDA_CHECK(cudaGetLastError());
  Tensor result(out.dtype, out.PhysicalDims());
  if (result.nbytes())
    KILN_CUDA_CHECK(
        cudaMemcpy(result.raw_data(), out_buffer.ptr, result.nbytes(), cudaMemcpyDeviceToHost));
  return result;
}

// Runs the layer on `x` (row-major); returns the output in its memory order.
Tensor RunLayer(const Tensor& x, const gpu::TensorDesc& out, const ir::Attributes& attrs) {
  ir::Graph graph;
  graph.opset_version = 17;
  std::unique_ptr<gpu::Layer> layer = CreateLayer(graph, Desc(x.dtype(), x.dims()), out, attrs);
  EXPECT_EQ(layer->KernelLaunches(), out.numel() > 0 ? 1 : 0);
  EXPECT_EQ(layer->WorkspaceBytes(), 0u);
  return RunOneInputLayer(*layer, x.raw_data(), x.nbytes(), out);
}

// The CPU backend's Pad (constant 0) + SpaceToDepth, cast to `out_dtype`,
// in NHWC memory order when asked.
Tensor Reference(const Tensor& x, const Ints& pads, int64_t blocksize, DType out_dtype, bool nhwc) {
  Tensor padded = RunNode("Pad", {x, Tensor::FromInt64s({8}, pads)}, {}, 1, 13, {false, true})[0];
  ir::Attributes a;
  a.set("blocksize", blocksize);
  Tensor y = RunNode("SpaceToDepth", {padded}, a, 1, 13)[0].CastTo(out_dtype);
  if (!nhwc) return y;
  ir::Attributes perm;
  perm.set("perm", Ints{0, 2, 3, 1});
  return RunNode("Transpose", {y}, perm)[0];
}

void ExpectSame(const Tensor& got, const Tensor& want, double tolerance) {
  ASSERT_EQ(got.dims(), want.dims());
  ASSERT_EQ(got.dtype(), want.dtype());
  Tensor g = got.CastTo(DType::kFloat64), w = want.CastTo(DType::kFloat64);
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double a = g.data<double>()[i], b = w.data<double>()[i];
    ASSERT_LE(std::fabs(a - b), tolerance * (1 + std::fabs(b)))
        << "element " << i << ": " << a << " vs " << b;
  }
}

struct S2dCase {
  Ints dims;
  Ints pads;
  int64_t blocksize = 2;
};

Ints OutputDims(const S2dCase& sc) {
  const int64_t b = sc.blocksize;
  return {sc.dims[0], (sc.dims[1] + sc.pads[1] + sc.pads[5]) * b * b,
          (sc.dims[2] + sc.pads[2] + sc.pads[6]) / b, (sc.dims[3] + sc.pads[3] + sc.pads[7]) / b};
}

TEST(GpuPadSpaceToDepth, MatchesCpuPadAndSpaceToDepth) {
  KILN_REQUIRE_GPU();
  const std::vector<S2dCase> cases = {
      {{2, 3, 224, 224}, {0, 0, 3, 3, 0, 1, 3, 3}, 2},  // ResNet's stem: 16 channels (vector path).
      {{1, 3, 7, 9}, {0, 0, 1, 0, 0, 0, 2, 1}, 2},      // 12 channels (element path), odd sizes.
      {{2, 1, 5, 5}, {0, 1, 2, 2, 0, 0, 2, 2}, 3},      // Block 3, leading channel pad.
      {{3, 2, 6, 6}, {0, 0, 0, 0, 0, 0, 0, 0}, 2},      // No padding, 8 channels.
      {{1, 3, 4, 4}, {0, 1, 0, 0, 0, 0, 0, 0}, 2},      // Channel pad in front, 16 channels.
      {{2, 4, 3, 5}, {0, 4, 1, 3, 0, 0, 0, 0}, 2},      // 32 channels.
      {{1, 1, 1, 1}, {0, 0, 0, 0, 0, 0, 1, 1}, 2},      // One pixel.
  };
  const std::vector<std::pair<DType, DType>> dtypes = {{DType::kFloat32, DType::kFloat16},
                                                       {DType::kFloat32, DType::kFloat32},
                                                       {DType::kFloat16, DType::kFloat16},
                                                       {DType::kFloat32, DType::kBFloat16},
                                                       {DType::kBFloat16, DType::kFloat32}};
  for (const S2dCase& sc : cases) {
    for (const auto& [from, to] : dtypes) {
      for (bool nhwc : {true, false}) {
        SCOPED_TRACE(StrCat(DimsToString(sc.dims), " pads ", DimsToString(sc.pads), " block ",
                            sc.blocksize, " ", DTypeName(from), " -> ", DTypeName(to),
                            nhwc ? " nhwc" : " row-major"));
        const Tensor x = RandomTensor(sc.dims, -4, 4, 11).CastTo(from);
        const Tensor got = RunLayer(
            x, Desc(to, OutputDims(sc), nhwc ? gpu::Layout::kNHWC : gpu::Layout::kRowMajor),
            S2dAttrs(sc.pads, sc.blocksize));
        // Both round once from the input value: equal but for how a tie
        // may round on the two sides.
        const double tolerance = from == to ? 0.0 : 1e-2;
        ExpectSame(got, Reference(x, sc.pads, sc.blocksize, to, nhwc), tolerance);
      }
    }
  }
}

TEST(GpuPadSpaceToDepth, EmptyBatchLaunchesNothing) {
  KILN_REQUIRE_GPU();
  const Tensor x(DType::kFloat32, {0, 3, 8, 8});
  const Tensor got = RunLayer(x, Desc(DType::kFloat16, {0, 16, 4, 4}, gpu::Layout::kNHWC),
                              S2dAttrs({0, 0, 0, 0, 0, 1, 0, 0}, 2));
  EXPECT_EQ(got.numel(), 0);
}

TEST(GpuPadSpaceToDepth, RejectsWhatItCannotRun) {
  KILN_REQUIRE_GPU();
  auto create = [](const gpu::TensorDesc& in, const gpu::TensorDesc& out, const ir::Attributes& a) {
    ir::Graph graph;
    graph.opset_version = 17;
    CreateLayer(graph, in, out, a);
  };
  const Ints pads = {0, 0, 3, 3, 0, 1, 3, 3};
  const gpu::TensorDesc in = Desc(DType::kFloat32, {2, 3, 16, 16});
  const gpu::TensorDesc out = Desc(DType::kFloat16, {2, 16, 11, 11}, gpu::Layout::kNHWC);
  EXPECT_NO_THROW(create(in, out, S2dAttrs(pads, 2)));
  // Wrong output dims, NHWC input, odd padded size, negative or batch pads,
  // integer dtypes, missing attributes.
  EXPECT_THROW(create(in, Desc(DType::kFloat16, {2, 16, 10, 11}), S2dAttrs(pads, 2)), Error);
  EXPECT_THROW(
      create(Desc(DType::kFloat32, {2, 3, 16, 16}, gpu::Layout::kNHWC), out, S2dAttrs(pads, 2)),
      Error);
  EXPECT_THROW(create(in, out, S2dAttrs({0, 0, 3, 3, 0, 1, 3, 2}, 2)), Error);
  EXPECT_THROW(create(in, out, S2dAttrs({0, 0, -1, 3, 0, 1, 3, 3}, 2)), Error);
  EXPECT_THROW(
      create(in, Desc(DType::kFloat16, {3, 16, 11, 11}), S2dAttrs({1, 0, 3, 3, 0, 1, 3, 3}, 2)),
      Error);
  EXPECT_THROW(create(Desc(DType::kInt32, {2, 3, 16, 16}), Desc(DType::kInt32, {2, 16, 11, 11}),
                      S2dAttrs(pads, 2)),
               Error);
  EXPECT_THROW(create(in, out, ir::Attributes{}), Error);
  try {
    create(in, Desc(DType::kFloat16, {2, 16, 10, 11}), S2dAttrs(pads, 2));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KilnPadSpaceToDepth"), std::string::npos) << e.what();
  }
}

// ---- uint8 image inputs (BuildConfig::image_input) ----

// Random uint8 images [n, h, w, c] (every byte value likely).
std::vector<uint8_t> RandomImages(const Ints& nhwc, uint32_t seed) {
  std::vector<uint8_t> bytes(static_cast<size_t>(nhwc[0] * nhwc[1] * nhwc[2] * nhwc[3]));
  uint32_t state = seed * 2654435761u + 1;
  for (uint8_t& b : bytes) {
    state = state * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(state >> 24);
  }
  return bytes;
}

// The pipeline's CPU normalization (the unfused path's float values): float32 [n, c, h, w].
Tensor NormalizedOnCpu(const std::vector<uint8_t>& images, const Ints& nhwc,
                       const std::vector<float>& mean, const std::vector<float>& stdv) {
  pipeline::ImageGeometry g{nhwc[0], nhwc[3], nhwc[1], nhwc[2], DType::kFloat32};
  Tensor x(DType::kFloat32, {nhwc[0], nhwc[3], nhwc[1], nhwc[2]});
  pipeline::NormalizeImagesCpu(images.data(), g, mean, stdv, x.raw_data());
  return x;
}

// Runs a one-node layer `op` on uint8 images; output buffer starts as NaN bytes.
Tensor RunImageLayer(const std::string& op, const std::vector<uint8_t>& images, const Ints& nhwc,
                     const gpu::TensorDesc& out, const ir::Attributes& attrs) {
  ir::Graph graph;
  graph.opset_version = 17;
  ir::Value* x = graph.AddValue("x", ir::TensorType{DType::kUInt8, ir::ShapeFromDims(nhwc)});
  ir::Value* y = graph.AddValue("y", ir::TensorType{out.dtype, ir::ShapeFromDims(out.dims)});
  ir::Node* node = graph.AddNode(op, "images", {x}, {y});
  node->attrs = attrs;
  gpu::LayerInit init{*node, {Desc(DType::kUInt8, nhwc)}, {out}, {nullptr}, {}, {}};
  const gpu::GpuOpDef* def = gpu::GpuLayerRegistry::Global().Find(op);
  KILN_CHECK(def, "no GPU layer for ", op);
  std::unique_ptr<gpu::Layer> layer = def->create(init);
  return RunOneInputLayer(*layer, images.data(), images.size(), out);
}

ir::Attributes ImageAttrs(const Ints& pads, int64_t blocksize, const std::vector<float>& mean,
                          const std::vector<float>& stdv) {
  ir::Attributes a = pads.empty() ? ir::Attributes{} : S2dAttrs(pads, blocksize);
  a.set("mean", mean);
  a.set("std", stdv);
  return a;
}

// The fused stem on uint8 images vs normalize (the pipeline's CPU reference)
// -> Pad -> SpaceToDepth on the CPU: float32 outputs bit for bit (the same
// IEEE expression), float16/bfloat16 rounded once from those values.
TEST(GpuPadSpaceToDepth, Uint8ImagesMatchNormalizeThenPadAndSpaceToDepth) {
  KILN_REQUIRE_GPU();
  struct Case {
    Ints nchw, pads;
    int64_t blocksize;
  };
  const std::vector<Case> cases = {
      {{2, 3, 224, 224}, {0, 0, 3, 3, 0, 1, 3, 3}, 2},  // ResNet's stem: 16 channels (vector path).
      {{3, 3, 37, 51}, {0, 0, 3, 3, 0, 1, 4, 4}, 2},    // Odd sizes.
      {{1, 3, 7, 9}, {0, 0, 1, 0, 0, 0, 2, 1}, 2},      // 12 channels (element path).
      {{2, 1, 5, 5}, {0, 1, 2, 2, 0, 0, 2, 2}, 3},      // Gray, block 3, leading channel pad.
      {{1, 4, 6, 6}, {0, 0, 0, 0, 0, 0, 0, 0}, 2},      // RGBA, no padding.
  };
  for (const Case& sc : cases) {
    const Ints nhwc = {sc.nchw[0], sc.nchw[2], sc.nchw[3], sc.nchw[1]};
    std::vector<float> mean, stdv;
    for (int64_t c = 0; c < sc.nchw[1]; ++c) {
      mean.push_back(0.485f - 0.03f * static_cast<float>(c));
      stdv.push_back(0.229f + 0.01f * static_cast<float>(c));
    }
    const std::vector<uint8_t> images = RandomImages(nhwc, 31);
    const Tensor normalized = NormalizedOnCpu(images, nhwc, mean, stdv);
    const Ints out_dims = OutputDims({sc.nchw, sc.pads, sc.blocksize});
    for (DType to : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (bool nhwc_out : {true, false}) {
        SCOPED_TRACE(StrCat(DimsToString(sc.nchw), " pads ", DimsToString(sc.pads), " block ",
                            sc.blocksize, " -> ", DTypeName(to), nhwc_out ? " nhwc" : " row-major"));
        const Tensor got = RunImageLayer(
            "KilnPadSpaceToDepth", images, nhwc,
            Desc(to, out_dims, nhwc_out ? gpu::Layout::kNHWC : gpu::Layout::kRowMajor),
            ImageAttrs(sc.pads, sc.blocksize, mean, stdv));
        const Tensor want = Reference(normalized, sc.pads, sc.blocksize, to, nhwc_out);
        if (to == DType::kFloat32) {
          ASSERT_EQ(got.nbytes(), want.nbytes());
          EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), got.nbytes()), 0)
              << "float32 values differ from the unfused path's";
        }
        ExpectSame(got, want, to == DType::kFloat32 ? 0.0 : 1e-2);
      }
    }
  }
}

// KilnNormalizeImage, the standalone layer where no stem absorbs it: the
// pipeline's kernel vs its CPU reference.
TEST(GpuNormalizeImage, MatchesTheCpuReference) {
  KILN_REQUIRE_GPU();
  for (const Ints& nhwc : {Ints{2, 7, 5, 3}, Ints{1, 224, 224, 3}, Ints{3, 4, 4, 1}, Ints{0, 4, 4, 3}}) {
    std::vector<float> mean(static_cast<size_t>(nhwc[3]), 0.45f), stdv(static_cast<size_t>(nhwc[3]), 0.226f);
    const std::vector<uint8_t> images = RandomImages(nhwc, 41);
    const Tensor want = NormalizedOnCpu(images, nhwc, mean, stdv);
    for (DType to : {DType::kFloat32, DType::kFloat16}) {
      SCOPED_TRACE(StrCat(DimsToString(nhwc), " -> ", DTypeName(to)));
      const Tensor got = RunImageLayer("KilnNormalizeImage", images, nhwc, Desc(to, want.dims()),
                                       ImageAttrs({}, 0, mean, stdv));
      ExpectSame(got, want.CastTo(to), 0.0);
    }
  }
}

TEST(GpuNormalizeImage, RejectsWhatItCannotRun) {
  KILN_REQUIRE_GPU();
  const std::vector<float> three = {0.5f, 0.5f, 0.5f};
  auto create = [](const std::string& op, const gpu::TensorDesc& in, const gpu::TensorDesc& out,
                   const ir::Attributes& a) {
    ir::Graph graph;
    graph.opset_version = 17;
    ir::Value* x = graph.AddValue("x", ir::TensorType{in.dtype, ir::ShapeFromDims(in.dims)});
    ir::Value* y = graph.AddValue("y", ir::TensorType{out.dtype, ir::ShapeFromDims(out.dims)});
    ir::Node* node = graph.AddNode(op, "images", {x}, {y});
    node->attrs = a;
    gpu::LayerInit init{*node, {in}, {out}, {nullptr}, {}, {}};
    gpu::GpuLayerRegistry::Global().Find(op)->create(init);
  };
  const gpu::TensorDesc images = Desc(DType::kUInt8, {2, 8, 8, 3});
  EXPECT_NO_THROW(create("KilnNormalizeImage", images, Desc(DType::kFloat32, {2, 3, 8, 8}),
                         ImageAttrs({}, 0, three, three)));
  EXPECT_THROW(create("KilnNormalizeImage", images, Desc(DType::kFloat32, {2, 8, 8, 3}),
                      ImageAttrs({}, 0, three, three)),
               Error);  // Not NCHW.
  EXPECT_THROW(create("KilnNormalizeImage", images, Desc(DType::kFloat32, {2, 3, 8, 8}),
                      ImageAttrs({}, 0, {0.5f}, {0.5f})),
               Error);  // One mean for three channels.
  EXPECT_THROW(create("KilnNormalizeImage", images, Desc(DType::kFloat32, {2, 3, 8, 8}),
                      ImageAttrs({}, 0, three, {0.5f, 0.f, 0.5f})),
               Error);  // Zero std.
  const Ints pads = {0, 0, 3, 3, 0, 1, 3, 3};
  const gpu::TensorDesc stem_out = Desc(DType::kFloat16, {2, 16, 7, 7}, gpu::Layout::kNHWC);
  EXPECT_NO_THROW(create("KilnPadSpaceToDepth", images, stem_out, ImageAttrs(pads, 2, three, three)));
  EXPECT_THROW(create("KilnPadSpaceToDepth", images, stem_out, S2dAttrs(pads, 2)), Error);  // No mean/std.
  EXPECT_THROW(create("KilnPadSpaceToDepth", Desc(DType::kFloat32, {2, 3, 8, 8}), stem_out,
                      ImageAttrs(pads, 2, three, three)),
               Error);  // mean/std on a float input.
}

// ---- Engines with an RGB stem ----

namespace fs = std::filesystem;

void AddFloatInitializer(::onnx::GraphProto* graph, const std::string& name, const Tensor& t) {
  ::onnx::TensorProto* p = graph->add_initializer();
  p->set_name(name);
  p->set_data_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : t.dims()) p->add_dims(d);
  p->set_raw_data(t.raw_data(), t.nbytes());
}

void AddFloatValueInfo(::onnx::ValueInfoProto* info, const std::string& name, const Ints& dims) {
  info->set_name(name);
  auto* tt = info->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

// x[n,3,h,w] -> Conv(k 7x7, stride 2, pads 3, bias) -> Relu -> MaxPool(3, 2, pads 1) -> y.
fs::path WriteStemModel(const Ints& x_dims, int64_t k) {
  ::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("stem");
  auto* conv = graph->add_node();
  conv->set_op_type("Conv");
  conv->set_name("conv1");
  for (const char* in : {"x", "w", "b"}) conv->add_input(in);
  conv->add_output("c");
  auto ints = [](::onnx::NodeProto* node, const char* name, const Ints& values) {
    auto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INTS);
    for (int64_t v : values) a->add_ints(v);
  };
  ints(conv, "kernel_shape", {7, 7});
  ints(conv, "strides", {2, 2});
  ints(conv, "pads", {3, 3, 3, 3});
  auto* relu = graph->add_node();
  relu->set_op_type("Relu");
  relu->set_name("relu");
  relu->add_input("c");
  relu->add_output("r");
  auto* pool = graph->add_node();
  pool->set_op_type("MaxPool");
  pool->set_name("pool");
  pool->add_input("r");
  pool->add_output("y");
  ints(pool, "kernel_shape", {3, 3});
  ints(pool, "strides", {2, 2});
  ints(pool, "pads", {1, 1, 1, 1});
  // Weights of realistic scale (He init for 3*7*7 inputs).
  AddFloatInitializer(graph, "w", RandomTensor({k, 3, 7, 7}, -0.2f, 0.2f, 21));
  AddFloatInitializer(graph, "b", RandomTensor({k}, -0.5f, 0.5f, 22));
  AddFloatValueInfo(graph->add_input(), "x", x_dims);
  const int64_t oh = (x_dims[2] + 6 - 7) / 2 + 1, ow = (x_dims[3] + 6 - 7) / 2 + 1;
  AddFloatValueInfo(graph->add_output(), "y",
                    {x_dims[0], k, (oh + 2 - 3) / 2 + 1, (ow + 2 - 3) / 2 + 1});
  const fs::path path = fs::temp_directory_path() / StrCat("kiln_s2d_stem_", ::getpid(), "_",
                                                           x_dims[2], "x", x_dims[3], ".onnx");
  std::ofstream out(path, std::ios::binary);
  out << model.SerializeAsString();
  KILN_CHECK(out.good(), "cannot write ", path.string());
  return path;
}

TEST(GpuPadSpaceToDepth, StemEnginesMatchCpu) {
  KILN_REQUIRE_GPU();
  for (const Ints& x_dims : {Ints{2, 3, 224, 224}, Ints{3, 3, 37, 50}}) {
    const fs::path path = WriteStemModel(x_dims, 64);
    std::unique_ptr<Model> model = Model::Load(path.string());
    const Tensor x = RandomTensor(x_dims, -2, 2, 23);
    const Tensor want = model->RunCpu({{"x", x}})[0];
    for (Precision precision : {Precision::kFP32, Precision::kFP16}) {
      SCOPED_TRACE(StrCat(DimsToString(x_dims), " ", PrecisionName(precision)));
      BuildConfig config;
      config.precision = precision;
      config.log = [](const std::string& line) { std::cout << "    [build] " << line << "\n"; };
      config.verbose = true;
      std::unique_ptr<Engine> engine = Engine::Build(path.string(), config);
      int s2d_layers = 0, layout_changes = 0, convs = 0, conv_pools = 0;
      for (const LayerInfo& l : engine->info().layers) {
        s2d_layers += l.op_type == "KilnPadSpaceToDepth";
        layout_changes += l.op_type == "KilnToNHWC";
        convs += l.op_type == "KilnConv" || l.op_type == "Conv";
        conv_pools += l.op_type == "KilnConvPool";
      }
      // FP16: conv + ReLU + max pool are one KilnConvPool (fuse_conv_pool.h)
      // reading the float32 input; FP32: the space-to-depth stem, its cast
      // and padding in one layer, then the convolution and the pool.
      const bool fp16 = precision == Precision::kFP16;
      EXPECT_EQ(conv_pools, fp16 ? 1 : 0);
      EXPECT_EQ(s2d_layers, fp16 ? 0 : 1);
      EXPECT_EQ(layout_changes, 0);
      EXPECT_EQ(convs, fp16 ? 0 : 1);
      auto context = engine->CreateContext();
      const Tensor got = context->Run({{"x", x}})[0];
      const double err = MaxRelativeError(got, want);
      std::cout << "    max|gpu-cpu|/max|cpu| = " << err << "\n";
      EXPECT_LE(err, precision == Precision::kFP32 ? 1e-4 : 1e-2);
      // The engine file keeps the new layer.
      const fs::path file = fs::path(path.string() + ".kiln");
      engine->Save(file.string());
      std::unique_ptr<Engine> loaded = Engine::Load(file.string());
      const Tensor again = loaded->CreateContext()->Run({{"x", x}})[0];
      EXPECT_EQ(MaxRelativeError(again, got), 0.0);
      fs::remove(file);
    }
    fs::remove(path);
  }
}

// A stem model built with an image input: the engine takes uint8 [N,H,W,C]
// under the input's name, the normalization is fused into its first layer,
// and the results match the CPU backend on the pipeline-normalized images.
// The option survives Save/Load.
TEST(GpuPadSpaceToDepth, StemEnginesWithAnImageInputMatchCpu) {
  KILN_REQUIRE_GPU();
  const Ints x_dims = {3, 3, 37, 50};
  const Ints nhwc = {3, 37, 50, 3};
  const fs::path path = WriteStemModel(x_dims, 64);
  std::unique_ptr<Model> model = Model::Load(path.string());
  const std::vector<uint8_t> images = RandomImages(nhwc, 51);
  const ImageNormalization imagenet;
  const Tensor want = model->RunCpu({{"x", NormalizedOnCpu(images, nhwc, imagenet.mean, imagenet.std)}})[0];
  Tensor input(DType::kUInt8, nhwc);
  std::memcpy(input.raw_data(), images.data(), images.size());
  for (Precision precision : {Precision::kFP32, Precision::kFP16}) {
    SCOPED_TRACE(PrecisionName(precision));
    BuildConfig config;
    config.precision = precision;
    config.image_input.name = "x";
    std::unique_ptr<Engine> engine = Engine::Build(path.string(), config);
    ASSERT_EQ(engine->inputs().size(), 1u);
    EXPECT_EQ(engine->inputs()[0].dtype, DType::kUInt8);
    EXPECT_EQ(engine->inputs()[0].dims, nhwc);
    int fused_stems = 0, normalize_layers = 0;
    for (const LayerInfo& l : engine->info().layers) {
      fused_stems += (l.op_type == "KilnPadSpaceToDepth" || l.op_type == "KilnConvPool") &&
                     l.inputs.find("uint8") != std::string::npos;
      normalize_layers += l.op_type == "KilnNormalizeImage";
    }
    EXPECT_EQ(fused_stems, 1);
    EXPECT_EQ(normalize_layers, 0);
    const Tensor got = engine->CreateContext()->Run({{"x", input}})[0];
    const double err = MaxRelativeError(got, want);
    std::cout << "    image input, max|gpu-cpu|/max|cpu| = " << err << "\n";
    EXPECT_LE(err, precision == Precision::kFP32 ? 1e-4 : 1e-2);
    const fs::path file = fs::path(path.string() + ".image.kiln");
    engine->Save(file.string());
    std::unique_ptr<Engine> loaded = Engine::Load(file.string());
    EXPECT_EQ(loaded->impl().lowering.image_input, config.image_input);
    EXPECT_EQ(loaded->inputs()[0].dtype, DType::kUInt8);
    EXPECT_EQ(MaxRelativeError(loaded->CreateContext()->Run({{"x", input}})[0], got), 0.0);
    fs::remove(file);
  }
  fs::remove(path);
}

fs::path ModelPath(const std::string& name) {
  const char* env = std::getenv("KILN_MODELS_DIR");
  fs::path dir = env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
  return dir / (name + ".onnx");
}

// ResNet-18 FP16 with the image input fused vs the float-input FP16 engine
// fed the pipeline-normalized images: the same float values reach the stem
// (rounded to FP16 once on both sides), so only tactic choices differ.
TEST(GpuPadSpaceToDepth, Resnet18Fp16ImageInputMatchesTheFloatEngine) {
  KILN_REQUIRE_GPU();
  if (!fs::exists(ModelPath("resnet18")))
    GTEST_SKIP() << "export models first (scripts/export_models.py)";
  const Ints nhwc = {4, 224, 224, 3};
  const std::vector<uint8_t> images = RandomImages(nhwc, 61);
  const ImageNormalization imagenet;
  BuildConfig config;
  config.precision = Precision::kFP16;
  config.shapes["input"] = {4, 3, 224, 224};
  std::unique_ptr<Engine> float_engine = Engine::Build(ModelPath("resnet18").string(), config);
  const Tensor want = float_engine->CreateContext()->Run(
      {{"input", NormalizedOnCpu(images, nhwc, imagenet.mean, imagenet.std)}})[0];
  config.image_input.name = "input";
  config.shapes["input"] = nhwc;
  std::unique_ptr<Engine> engine = Engine::Build(ModelPath("resnet18").string(), config);
  EXPECT_EQ(engine->inputs()[0].dtype, DType::kUInt8);
  EXPECT_EQ(engine->info().layers.size(), float_engine->info().layers.size());  // Nothing added.
  Tensor input(DType::kUInt8, nhwc);
  std::memcpy(input.raw_data(), images.data(), images.size());
  const Tensor got = engine->CreateContext()->Run({{"input", input}})[0];
  const double err = MaxRelativeError(got, want);
  std::cout << "    resnet18 fp16 logits, image input vs float input: max|a-b|/max|b| = " << err << "\n";
  EXPECT_LE(err, 1e-2);
}

}  // namespace
}  // namespace kiln
