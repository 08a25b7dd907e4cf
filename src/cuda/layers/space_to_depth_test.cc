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

// Runs the layer on `x` (row-major); returns the output in its memory order.
// The output buffer starts as 0xFF bytes (NaN for every float type), so an
// element left unwritten fails the comparison.
Tensor RunLayer(const Tensor& x, const gpu::TensorDesc& out, const ir::Attributes& attrs) {
  ir::Graph graph;
  graph.opset_version = 17;
  std::unique_ptr<gpu::Layer> layer = CreateLayer(graph, Desc(x.dtype(), x.dims()), out, attrs);
  EXPECT_EQ(layer->KernelLaunches(), out.numel() > 0 ? 1 : 0);
  EXPECT_EQ(layer->WorkspaceBytes(), 0u);
  DeviceBuffer in_buffer(std::max<size_t>(x.nbytes(), 1));
  DeviceBuffer out_buffer(std::max<size_t>(out.nbytes(), 1));
  if (x.nbytes())
    KILN_CUDA_CHECK(cudaMemcpy(in_buffer.ptr, x.raw_data(), x.nbytes(), cudaMemcpyHostToDevice));
  KILN_CUDA_CHECK(cudaMemset(out_buffer.ptr, 0xFF, std::max<size_t>(out.nbytes(), 1)));
  gpu::LaunchArgs args;
  args.inputs = {in_buffer.ptr};
  args.outputs = {out_buffer.ptr};
  layer->Enqueue(args);
  KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  KILN_CUDA_CHECK(cudaGetLastError());
  Tensor result(out.dtype, out.PhysicalDims());
  if (result.nbytes())
    KILN_CUDA_CHECK(
        cudaMemcpy(result.raw_data(), out_buffer.ptr, result.nbytes(), cudaMemcpyDeviceToHost));
  return result;
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
      int s2d_layers = 0, layout_changes = 0, convs = 0;
      for (const LayerInfo& l : engine->info().layers) {
        s2d_layers += l.op_type == "KilnPadSpaceToDepth";
        layout_changes += l.op_type == "KilnToNHWC";
        convs += l.op_type == "KilnConv" || l.op_type == "Conv";
      }
      EXPECT_EQ(s2d_layers, 1);
      EXPECT_EQ(layout_changes, 0);  // FP16: the cast and NHWC transpose are in the one layer.
      EXPECT_EQ(convs, 1);
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

}  // namespace
}  // namespace kiln
