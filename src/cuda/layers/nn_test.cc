// GPU tests of the convolution and GEMM layers (layers/conv.cc, gemm.cc):
// every tactic of every case is checked against the CPU backend. Fused ops
// (KilnConv, KilnMatMul) and NHWC layouts have no CPU/inference entry, so
// they run through a local helper that creates the layer directly; their
// reference is the CPU result of the unfused ONNX ops plus the epilogue
// computed on the host.
#include <cublasLt.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "cuda/library_check.h"
#include "gpu_test_util.h"
#include "test_util.h"

namespace kiln::gpu {
namespace {

using kiln::testing::ExpectGpuMatchesCpu;
using kiln::testing::GpuNodeOptions;
using kiln::testing::RandomTensor;
using kiln::testing::RunNode;
using kiln::testing::RunNodeOnGpu;

// ---- Helpers ----

Handles TestHandles() {
  static Handles handles = [] {
    Handles h;
    cudnnHandle_t cudnn = nullptr;
    KILN_CUDNN_CHECK(cudnnCreate(&cudnn));
    cublasLtHandle_t lt = nullptr;
    KILN_CUBLAS_CHECK(cublasLtCreate(&lt));
    h.cudnn = cudnn;
    h.cublaslt = lt;
    return h;
  }();
  return handles;
}

using cuda::DeviceBuffer;

Tensor As(const Tensor& t, DType dtype) {
  if (!t.defined() || t.dtype() == dtype) return t;
  return t.CastTo(dtype);
}

// Rounds a float32 tensor through dtype (what the GPU sees), back to float32.
Tensor Rounded(const Tensor& t, DType dtype) { return As(As(t, dtype), DType::kFloat32); }

// Logical NCHW <-> NHWC memory order of a rank-4 tensor (any element size).
Tensor Permute4(const Tensor& t, bool to_nhwc) {
  const std::vector<int64_t>& d = t.dims();
  // Source dims in memory order.
  const int64_t n = d[0];
  const int64_t c = to_nhwc ? d[1] : d[3];
  const int64_t h = to_nhwc ? d[2] : d[1];
  const int64_t w = to_nhwc ? d[3] : d[2];
  Tensor out(t.dtype(), to_nhwc ? std::vector<int64_t>{n, h, w, c} : std::vector<int64_t>{n, c, h, w});
  const size_t es = DTypeSize(t.dtype());
  const char* src = static_cast<const char*>(t.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ic = 0; ic < c; ++ic)
      for (int64_t ih = 0; ih < h; ++ih)
        for (int64_t iw = 0; iw < w; ++iw) {
          const int64_t nchw = ((in * c + ic) * h + ih) * w + iw;
          const int64_t nhwc = ((in * h + ih) * w + iw) * c + ic;
          const int64_t from = to_nhwc ? nchw : nhwc, to = to_nhwc ? nhwc : nchw;
          std::memcpy(dst + to * static_cast<int64_t>(es), src + from * static_cast<int64_t>(es), es);
        }
  return out;
}

struct LayerCase {
  std::string op;
  std::vector<Tensor> inputs;  // Logical dims, in the dtype the layer sees.
  std::vector<Layout> layouts;  // Per input (default row-major).
  std::vector<bool> constant;
  ir::Attributes attrs;
  std::vector<int64_t> out_dims;
  Layout out_layout = Layout::kRowMajor;
  PrecisionOptions precision;
  // Also replay every tactic from a captured CUDA graph (as engines do).
  bool capture = false;
  // When set, receives every tactic's name.
  std::vector<std::string>* tactic_names = nullptr;
};

// Creates the layer directly (no inference), runs every tactic and returns
// each tactic's output as a logical float32 tensor.
std::vector<Tensor> RunLayer(const LayerCase& c) {
  ir::Graph graph;
  graph.opset_version = 17;
  std::vector<ir::Value*> node_inputs;
  std::vector<Tensor> physical;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Tensor& t = c.inputs[i];
    const Layout layout = i < c.layouts.size() ? c.layouts[i] : Layout::kRowMajor;
    if (!t.defined()) {
      node_inputs.push_back(nullptr);
      physical.emplace_back();
      continue;
    }
    node_inputs.push_back(graph.AddValue("in" + std::to_string(i), ir::TensorType::Of(t)));
    physical.push_back(layout == Layout::kNHWC ? Permute4(t, true) : t);
  }
  const DType dtype = c.inputs[0].dtype();
  ir::Value* out_value = graph.AddValue("out", {dtype, ir::ShapeFromDims(c.out_dims)});
  ir::Node* node = graph.AddNode(c.op, "test_" + c.op, node_inputs, {out_value});
  node->attrs = c.attrs;
  node->opset = 17;

  LayerInit init{*node, {}, {}, {}, c.precision, TestHandles()};
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    TensorDesc d;
    if (c.inputs[i].defined()) {
      d.dtype = c.inputs[i].dtype();
      d.dims = c.inputs[i].dims();
      d.layout = i < c.layouts.size() ? c.layouts[i] : Layout::kRowMajor;
    }
    init.inputs.push_back(d);
    const bool constant = i < c.constant.size() && c.constant[i] && c.inputs[i].defined();
    init.constants.push_back(constant ? &physical[i] : nullptr);
  }
  TensorDesc out_desc;
  out_desc.dtype = dtype;
  out_desc.dims = c.out_dims;
  out_desc.layout = c.out_layout;
  init.outputs.push_back(out_desc);

  const GpuOpDef* def = GpuLayerRegistry::Global().Find(c.op);
  KILN_CHECK(def, "no GPU layer for ", c.op);
  std::unique_ptr<Layer> layer = def->create(init);

  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  LaunchArgs args;
  args.handles = init.handles;
  for (size_t i = 0; i < physical.size(); ++i) {
    if (!physical[i].defined() || !layer->ReadsInputOnDevice(static_cast<int>(i))) {
      args.inputs.push_back(nullptr);
      continue;
    }
    buffers.push_back(std::make_unique<DeviceBuffer>(physical[i].nbytes()));
    KILN_CUDA_CHECK(cudaMemcpy(buffers.back()->ptr, physical[i].raw_data(), physical[i].nbytes(),
                               cudaMemcpyHostToDevice));
    args.inputs.push_back(buffers.back()->ptr);
  }
  DeviceBuffer out(out_desc.nbytes());
  args.outputs.push_back(out.ptr);

  auto download = [&]() {
    std::vector<int64_t> phys_dims =
        c.out_layout == Layout::kNHWC
            ? std::vector<int64_t>{c.out_dims[0], c.out_dims[2], c.out_dims[3], c.out_dims[1]}
            : c.out_dims;
    Tensor t(dtype, phys_dims);
    if (t.nbytes())
      KILN_CUDA_CHECK(cudaMemcpy(t.raw_data(), out.ptr, t.nbytes(), cudaMemcpyDeviceToHost));
    if (c.out_layout == Layout::kNHWC) t = Permute4(t, false);
    return As(t, DType::kFloat32);
  };
  const bool verbose = std::getenv("KILN_NN_TEST_VERBOSE") != nullptr;
  std::vector<Tensor> results;
  for (int tactic = 0; tactic < layer->NumTactics(); ++tactic) {
    layer->SetTactic(tactic);
    SCOPED_TRACE(layer->TacticName());
    EXPECT_FALSE(layer->TacticName().empty());
    if (c.tactic_names) c.tactic_names->push_back(layer->TacticName());
    if (verbose)
      std::printf("  %s tactic %d: %s (workspace %zu, %d launches)\n", c.op.c_str(), tactic,
                  layer->TacticName().c_str(), layer->WorkspaceBytes(), layer->KernelLaunches());
    DeviceBuffer workspace(layer->WorkspaceBytes());
    args.workspace = workspace.ptr;
    args.stream = nullptr;
    if (out_desc.nbytes()) KILN_CUDA_CHECK(cudaMemset(out.ptr, 0xFF, out_desc.nbytes()));
    layer->Enqueue(args);
    KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    KILN_CUDA_CHECK(cudaGetLastError());
    results.push_back(download());
    if (!c.capture) continue;
    // The same tactic captured into a CUDA graph and replayed.
    cudaStream_t stream = nullptr;
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    if (out_desc.nbytes()) KILN_CUDA_CHECK(cudaMemset(out.ptr, 0xFF, out_desc.nbytes()));
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
    args.stream = stream;
    cudaGraph_t graph_handle = nullptr;
    KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    layer->Enqueue(args);
    KILN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph_handle));
    cudaGraphExec_t exec = nullptr;
    KILN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph_handle, 0));
    KILN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    KILN_CUDA_CHECK(cudaGraphExecDestroy(exec));
    KILN_CUDA_CHECK(cudaGraphDestroy(graph_handle));
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
    results.push_back(download());
  }
  return results;
}

void ExpectClose(const Tensor& got, const Tensor& want, double rtol, double atol) {
  ASSERT_EQ(got.dims(), want.dims());
  Tensor g = got.CastTo(DType::kFloat64), w = want.CastTo(DType::kFloat64);
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double a = g.data<double>()[i], b = w.data<double>()[i];
    ASSERT_FALSE(std::isnan(a)) << "element " << i << " not written (NaN), expected " << b;
    ASSERT_LE(std::fabs(a - b), atol + rtol * std::fabs(b))
        << "element " << i << ": gpu " << a << " reference " << b;
  }
}

void ExpectAllTactics(const LayerCase& c, const Tensor& want, double rtol, double atol) {
  std::vector<Tensor> results = RunLayer(c);
  ASSERT_FALSE(results.empty());
  for (size_t t = 0; t < results.size(); ++t) {
    SCOPED_TRACE(StrCat(c.op, " tactic ", t));
    ExpectClose(results[t], want, rtol, atol);
  }
}

// Host reference epilogue: y = act(y + z) (y, z float32, same dims).
float HostActivation(const std::string& act, float x, float alpha, float beta) {
  if (act.empty()) return x;
  if (act == "Relu") return x < 0 ? 0 : x;
  if (act == "Clip") return std::min(std::max(x, alpha), beta);
  if (act == "Sigmoid") return 1.f / (1.f + std::exp(-x));
  if (act == "Tanh") return std::tanh(x);
  if (act == "LeakyRelu") return x < 0 ? alpha * x : x;
  if (act == "HardSigmoid") return std::max(0.f, std::min(1.f, alpha * x + beta));
  if (act == "HardSwish") return x * std::max(0.f, std::min(1.f, x / 6.f + 0.5f));
  if (act == "SiLU") return x / (1.f + std::exp(-x));
  if (act == "GeluErf") return 0.5f * x * (1.f + std::erf(x * 0.70710678f));
  if (act == "GeluTanh")
    return 0.5f * x * (1.f + std::tanh(0.7978845608f * (x + 0.044715f * x * x * x)));
  ADD_FAILURE() << "unknown activation " << act;
  return x;
}

Tensor Epilogue(Tensor y, const Tensor* z, const std::string& act, float alpha = 0,
                float beta = 0) {
  y = y.Clone();
  for (int64_t i = 0; i < y.numel(); ++i) {
    float v = y.data<float>()[i];
    if (z) v += z->data<float>()[i];
    y.data<float>()[i] = HostActivation(act, v, alpha, beta);
  }
  return y;
}

ir::Attributes ConvAttrs(std::vector<int64_t> pads = {}, std::vector<int64_t> strides = {},
                         std::vector<int64_t> dilations = {}, int64_t group = 1) {
  ir::Attributes a;
  if (!pads.empty()) a.set("pads", pads);
  if (!strides.empty()) a.set("strides", strides);
  if (!dilations.empty()) a.set("dilations", dilations);
  if (group != 1) a.set("group", group);
  return a;
}

constexpr double kF32Rtol = 1e-4, kF32Atol = 1e-4;
constexpr double kF16Rtol = 1e-2, kF16Atol = 3e-3;

// Conv through the shared helper in both precisions.
void CheckConv(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& w_dims,
               bool bias, const ir::Attributes& attrs, uint32_t seed = 1) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
    SCOPED_TRACE(DTypeName(dtype));
    std::vector<Tensor> inputs = {As(RandomTensor(x_dims, -1, 1, seed), dtype),
                                  As(RandomTensor(w_dims, -0.5f, 0.5f, seed + 1), dtype)};
    if (bias) inputs.push_back(As(RandomTensor({w_dims[0]}, -1, 1, seed + 2), dtype));
    GpuNodeOptions options;
    options.constant_inputs = {false, true, true};
    const bool f32 = dtype == DType::kFloat32;
    ExpectGpuMatchesCpu("Conv", inputs, attrs, options, f32 ? kF32Rtol : kF16Rtol,
                        f32 ? kF32Atol : kF16Atol);
  }
}

// ---- Conv ----

TEST(ConvGpu, Conv2DWithAndWithoutBias) {
  KILN_REQUIRE_GPU();
  CheckConv({2, 5, 9, 11}, {6, 5, 3, 3}, true, ConvAttrs({1, 1, 1, 1}));
  CheckConv({2, 5, 9, 11}, {6, 5, 3, 3}, false, ConvAttrs());
  CheckConv({1, 1, 1, 1}, {1, 1, 1, 1}, true, ConvAttrs());  // Single element.
  CheckConv({3, 16, 7, 7}, {32, 16, 1, 1}, true, ConvAttrs());  // Pointwise.
}

TEST(ConvGpu, StridesPadsDilations) {
  KILN_REQUIRE_GPU();
  CheckConv({2, 4, 13, 10}, {5, 4, 3, 3}, true, ConvAttrs({1, 2, 1, 2}, {2, 2}, {2, 1}));
  // Asymmetric pads run through a padded copy of X.
  CheckConv({2, 4, 13, 10}, {5, 4, 3, 2}, true, ConvAttrs({0, 1, 2, 1}, {2, 1}));
  ir::Attributes same;
  same.set("auto_pad", std::string("SAME_UPPER"));
  same.set("strides", std::vector<int64_t>{2, 2});
  CheckConv({1, 3, 10, 9}, {4, 3, 4, 4}, false, same);
}

TEST(ConvGpu, GroupsAndDepthwise) {
  KILN_REQUIRE_GPU();
  CheckConv({2, 8, 9, 9}, {6, 4, 3, 3}, true, ConvAttrs({1, 1, 1, 1}, {}, {}, 2));
  CheckConv({2, 8, 9, 9}, {8, 1, 3, 3}, true, ConvAttrs({1, 1, 1, 1}, {}, {}, 8));
  CheckConv({2, 8, 9, 9}, {16, 1, 3, 3}, false, ConvAttrs({1, 1, 1, 1}, {2, 2}, {}, 8));
}

TEST(ConvGpu, Conv1DAnd3D) {
  KILN_REQUIRE_GPU();
  CheckConv({2, 3, 17}, {4, 3, 5}, true, ConvAttrs({2, 1}, {2}));
  CheckConv({1, 3, 5, 6, 7}, {4, 3, 3, 3, 3}, true, ConvAttrs({1, 1, 1, 1, 1, 1}));
}

TEST(ConvGpu, BFloat16) {
  KILN_REQUIRE_GPU();
  std::vector<Tensor> inputs = {As(RandomTensor({2, 8, 9, 9}, -1, 1, 3), DType::kBFloat16),
                                As(RandomTensor({8, 8, 3, 3}, -0.5f, 0.5f, 4), DType::kBFloat16),
                                As(RandomTensor({8}, -1, 1, 5), DType::kBFloat16)};
  GpuNodeOptions options;
  options.constant_inputs = {false, true, true};
  ExpectGpuMatchesCpu("Conv", inputs, ConvAttrs({1, 1, 1, 1}), options, 3e-2, 2e-2);
}

TEST(ConvGpu, Tf32IsAccurateEnough) {
  KILN_REQUIRE_GPU();
  std::vector<Tensor> inputs = {RandomTensor({2, 16, 8, 8}, -1, 1, 3),
                                RandomTensor({16, 16, 3, 3}, -0.5f, 0.5f, 4)};
  GpuNodeOptions options;
  options.constant_inputs = {false, true};
  options.precision.tf32 = true;
  ExpectGpuMatchesCpu("Conv", inputs, ConvAttrs({1, 1, 1, 1}), options, 1e-2, 1e-2);
}

// ---- KilnConv ----

struct KilnConvSpec {
  std::vector<int64_t> x_dims, w_dims;
  ir::Attributes conv_attrs;
  bool bias = true, residual = true;
  std::string activation;
  float alpha = 0, beta = 0;
  bool nhwc = false;
};

void CheckKilnConv(const KilnConvSpec& s, DType dtype, uint32_t seed = 11,
                   std::vector<std::string>* tactic_names = nullptr) {
  SCOPED_TRACE(StrCat("KilnConv ", s.activation, " ", DTypeName(dtype), s.nhwc ? " nhwc" : ""));
  const Tensor x = Rounded(RandomTensor(s.x_dims, -1, 1, seed), dtype);
  const Tensor w = Rounded(RandomTensor(s.w_dims, -0.5f, 0.5f, seed + 1), dtype);
  const Tensor b = s.bias ? Rounded(RandomTensor({s.w_dims[0]}, -1, 1, seed + 2), dtype) : Tensor();
  std::vector<Tensor> ref_inputs = {x, w};
  if (s.bias) ref_inputs.push_back(b);
  const Tensor conv = RunNode("Conv", ref_inputs, s.conv_attrs, 1, 17, {false, true, true})[0];
  const Tensor z = s.residual ? Rounded(RandomTensor(conv.dims(), -1, 1, seed + 3), dtype) : Tensor();
  const Tensor want = Epilogue(conv, s.residual ? &z : nullptr, s.activation, s.alpha, s.beta);

  LayerCase c;
  c.op = "KilnConv";
  c.inputs = {As(x, dtype), As(w, dtype), As(b, dtype), As(z, dtype)};
  const Layout layout = s.nhwc ? Layout::kNHWC : Layout::kRowMajor;
  c.layouts = {layout, layout, Layout::kRowMajor, layout};
  c.constant = {false, true, true, false};
  c.attrs = s.conv_attrs;
  c.attrs.set("activation", s.activation);
  c.attrs.set("activation_alpha", s.alpha);
  c.attrs.set("activation_beta", s.beta);
  c.out_dims = conv.dims();
  c.out_layout = layout;
  c.capture = true;
  c.tactic_names = tactic_names;
  if (dtype == DType::kFloat32) {
    ExpectAllTactics(c, want, kF32Rtol, kF32Atol);
  } else if (dtype == DType::kFloat16) {
    ExpectAllTactics(c, want, kF16Rtol, 1e-2);
  } else {
    ExpectAllTactics(c, want, 3e-2, 3e-2);
  }
}

TEST(KilnConvGpu, ResidualRelu) {
  KILN_REQUIRE_GPU();
  KilnConvSpec s;
  s.x_dims = {2, 8, 10, 10};
  s.w_dims = {16, 8, 3, 3};
  s.conv_attrs = ConvAttrs({1, 1, 1, 1});
  s.activation = "Relu";
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) CheckKilnConv(s, dtype);
  s.residual = false;  // Bias + ReLU: the cuDNN fused path.
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) CheckKilnConv(s, dtype);
  s.activation = "";  // Bias only: identity activation in the fused API.
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) CheckKilnConv(s, dtype);
  s.bias = false;  // Nothing but the convolution.
  CheckKilnConv(s, DType::kFloat32);
  s.residual = true;  // Residual without bias.
  s.activation = "Relu";
  CheckKilnConv(s, DType::kFloat16);
}

TEST(KilnConvGpu, Activations) {
  KILN_REQUIRE_GPU();
  struct A {
    std::string name;
    float alpha, beta;
  };
  for (const A& a : std::vector<A>{{"Clip", 0.f, 0.5f},
                                   {"Sigmoid", 0, 0},
                                   {"Tanh", 0, 0},
                                   {"LeakyRelu", 0.1f, 0},
                                   {"HardSigmoid", 0.2f, 0.5f},
                                   {"HardSwish", 0, 0},
                                   {"SiLU", 0, 0}}) {
    KilnConvSpec s;
    s.x_dims = {1, 6, 7, 9};
    s.w_dims = {10, 3, 3, 3};
    s.conv_attrs = ConvAttrs({1, 1, 1, 1}, {1, 2}, {}, 2);
    s.activation = a.name;
    s.alpha = a.alpha;
    s.beta = a.beta;
    s.residual = a.name == "Sigmoid" || a.name == "SiLU";
    CheckKilnConv(s, DType::kFloat32);
    CheckKilnConv(s, DType::kFloat16);
  }
}

TEST(KilnConvGpu, Nhwc) {
  KILN_REQUIRE_GPU();
  KilnConvSpec s;
  s.x_dims = {2, 16, 14, 14};
  s.w_dims = {32, 16, 3, 3};
  s.conv_attrs = ConvAttrs({1, 1, 1, 1});
  s.activation = "Relu";
  s.nhwc = true;
  for (DType dtype : {DType::kFloat16, DType::kFloat32}) CheckKilnConv(s, dtype);
  // Depthwise NHWC.
  s.w_dims = {16, 1, 3, 3};
  s.conv_attrs = ConvAttrs({1, 1, 1, 1}, {2, 2}, {}, 16);
  CheckKilnConv(s, DType::kFloat16);
}

bool HasGemmTactic(const std::vector<std::string>& names) {
  for (const std::string& n : names)
    if (n.rfind("cublaslt_gemm/", 0) == 0) return true;
  return false;
}

// 1x1 stride-1 NHWC convolutions also run as one cuBLASLt GEMM (residual as
// beta*C, bias/ReLU epilogue); every tactic, that one included, must match
// the CPU reference for each epilogue combination, at batch 1 and at an odd
// N*H*W.
TEST(KilnConvGpu, PointwiseGemmTactic) {
  KILN_REQUIRE_GPU();
  struct Shape {
    std::vector<int64_t> x, w;
  };
  for (const Shape& shape : std::vector<Shape>{{{1, 32, 7, 7}, {24, 32, 1, 1}},
                                               {{3, 16, 7, 5}, {40, 16, 1, 1}}}) {
    for (bool bias : {true, false}) {
      for (bool residual : {true, false}) {
        for (const std::string activation : {"", "Relu"}) {
          KilnConvSpec s;
          s.x_dims = shape.x;
          s.w_dims = shape.w;
          s.bias = bias;
          s.residual = residual;
          s.activation = activation;
          s.nhwc = true;
          SCOPED_TRACE(StrCat("x ", DimsToString(shape.x), " bias ", bias, " residual ", residual));
          for (DType dtype : {DType::kFloat16, DType::kFloat32}) {
            std::vector<std::string> names;
            CheckKilnConv(s, dtype, 31, &names);
            EXPECT_TRUE(HasGemmTactic(names)) << "no cuBLASLt tactic for " << DTypeName(dtype);
          }
        }
      }
    }
  }
  KilnConvSpec s;
  s.x_dims = {1, 16, 7, 5};
  s.w_dims = {24, 16, 1, 1};
  s.activation = "Relu";
  s.nhwc = true;
  std::vector<std::string> names;
  CheckKilnConv(s, DType::kBFloat16, 33, &names);
  EXPECT_TRUE(HasGemmTactic(names));
  // Not a plain GEMM: stride 2 (ResNet's downsampling 1x1), padding, a 3x3
  // kernel, a non-fusable activation, row-major NCHW.
  s.x_dims = {1, 16, 8, 6};
  s.conv_attrs = ConvAttrs({}, {2, 2});
  names.clear();
  CheckKilnConv(s, DType::kFloat16, 34, &names);
  EXPECT_FALSE(HasGemmTactic(names));
  s.conv_attrs = ConvAttrs({1, 1, 1, 1});
  names.clear();
  CheckKilnConv(s, DType::kFloat16, 35, &names);
  EXPECT_FALSE(HasGemmTactic(names));
  s.w_dims = {24, 16, 3, 3};
  s.conv_attrs = ConvAttrs({1, 1, 1, 1});
  names.clear();
  CheckKilnConv(s, DType::kFloat16, 36, &names);
  EXPECT_FALSE(HasGemmTactic(names));
  s.w_dims = {24, 16, 1, 1};
  s.conv_attrs = ConvAttrs();
  s.activation = "Sigmoid";
  names.clear();
  CheckKilnConv(s, DType::kFloat16, 37, &names);
  EXPECT_FALSE(HasGemmTactic(names));
  s.activation = "Relu";
  s.nhwc = false;
  names.clear();
  CheckKilnConv(s, DType::kFloat16, 38, &names);
  EXPECT_FALSE(HasGemmTactic(names));
}

TEST(KilnConvGpu, NhwcRgbInput) {
  KILN_REQUIRE_GPU();
  // ResNet's first convolution: C = 3, 7x7 stride 2 pad 3, in FP16 NHWC.
  KilnConvSpec s;
  s.x_dims = {2, 3, 32, 32};
  s.w_dims = {16, 3, 7, 7};
  s.conv_attrs = ConvAttrs({3, 3, 3, 3}, {2, 2});
  s.activation = "Relu";
  s.residual = false;
  s.nhwc = true;
  CheckKilnConv(s, DType::kFloat16);
  CheckKilnConv(s, DType::kBFloat16);
  // Asymmetric pads and channel padding together.
  s.conv_attrs = ConvAttrs({2, 3, 3, 2}, {2, 2});
  CheckKilnConv(s, DType::kFloat16);
}

TEST(ConvGpu, PlainConvNhwc) {
  KILN_REQUIRE_GPU();
  const Tensor x = Rounded(RandomTensor({2, 8, 9, 9}, -1, 1, 21), DType::kFloat16);
  const Tensor w = Rounded(RandomTensor({12, 8, 3, 3}, -0.5f, 0.5f, 22), DType::kFloat16);
  const ir::Attributes attrs = ConvAttrs({1, 1, 1, 1}, {2, 2});
  const Tensor want = RunNode("Conv", {x, w}, attrs, 1, 17, {false, true})[0];
  LayerCase c;
  c.op = "Conv";
  c.inputs = {As(x, DType::kFloat16), As(w, DType::kFloat16)};
  c.layouts = {Layout::kNHWC, Layout::kNHWC};
  c.constant = {false, true};
  c.attrs = attrs;
  c.out_dims = want.dims();
  c.out_layout = Layout::kNHWC;
  ExpectAllTactics(c, want, kF16Rtol, kF16Atol);
}

TEST(ConvGpu, RejectsUnsupported) {
  KILN_REQUIRE_GPU();
  ir::Attributes bad;
  bad.set("activation", std::string("Softplus"));
  LayerCase c;
  c.op = "KilnConv";
  c.inputs = {RandomTensor({1, 2, 4, 4}), RandomTensor({2, 2, 1, 1})};
  c.attrs = bad;
  c.out_dims = {1, 2, 4, 4};
  EXPECT_THROW(RunLayer(c), Error);
}

// ---- ConvTranspose ----

void CheckConvTranspose(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& w_dims,
                        bool bias, const ir::Attributes& attrs) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
    SCOPED_TRACE(DTypeName(dtype));
    std::vector<Tensor> inputs = {As(RandomTensor(x_dims, -1, 1, 31), dtype),
                                  As(RandomTensor(w_dims, -0.5f, 0.5f, 32), dtype)};
    const int64_t group = attrs.GetInt("group", 1);
    if (bias) inputs.push_back(As(RandomTensor({w_dims[1] * group}, -1, 1, 33), dtype));
    GpuNodeOptions options;
    options.constant_inputs = {false, true, true};
    const bool f32 = dtype == DType::kFloat32;
    ExpectGpuMatchesCpu("ConvTranspose", inputs, attrs, options, f32 ? kF32Rtol : kF16Rtol,
                        f32 ? kF32Atol : kF16Atol);
  }
}

TEST(ConvTransposeGpu, Variants) {
  KILN_REQUIRE_GPU();
  CheckConvTranspose({2, 4, 5, 6}, {4, 3, 3, 3}, true, ConvAttrs());
  ir::Attributes up = ConvAttrs({1, 1, 1, 1}, {2, 2});
  up.set("output_padding", std::vector<int64_t>{1, 1});
  CheckConvTranspose({2, 4, 5, 6}, {4, 3, 3, 3}, true, up);
  // Groups and dilations.
  CheckConvTranspose({1, 6, 5, 5}, {6, 2, 3, 3}, true, ConvAttrs({0, 0, 0, 0}, {2, 1}, {1, 2}, 3));
  // Asymmetric pads: computed uncropped, then cropped.
  CheckConvTranspose({1, 3, 4, 4}, {3, 2, 3, 3}, false, ConvAttrs({0, 1, 1, 0}, {2, 2}));
  // output_shape larger than the full result (zero-extended, bias only).
  ir::Attributes shaped;
  shaped.set("strides", std::vector<int64_t>{2, 2});
  shaped.set("output_shape", std::vector<int64_t>{10, 9});
  CheckConvTranspose({1, 3, 4, 4}, {3, 2, 2, 2}, true, shaped);
  // 1-D.
  CheckConvTranspose({2, 3, 7}, {3, 4, 3}, true, ConvAttrs({1, 1}, {3}));
}

// ---- MatMul / Gemm ----

void CheckGpu(const std::string& op, const std::vector<Tensor>& f32_inputs,
              const ir::Attributes& attrs, std::vector<bool> constant = {}) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
    SCOPED_TRACE(StrCat(op, " ", DTypeName(dtype)));
    std::vector<Tensor> inputs;
    for (const Tensor& t : f32_inputs) inputs.push_back(As(t, dtype));
    GpuNodeOptions options;
    options.constant_inputs = constant;
    const bool f32 = dtype == DType::kFloat32;
    ExpectGpuMatchesCpu(op, inputs, attrs, options, f32 ? kF32Rtol : kF16Rtol,
                        f32 ? kF32Atol : kF16Atol);
  }
}

TEST(MatMulGpu, Shapes) {
  KILN_REQUIRE_GPU();
  CheckGpu("MatMul", {RandomTensor({7, 5}, -1, 1, 1), RandomTensor({5, 3}, -1, 1, 2)}, {});
  CheckGpu("MatMul", {RandomTensor({1, 1}, -1, 1, 1), RandomTensor({1, 1}, -1, 1, 2)}, {});
  // Shared weights: one GEMM over all rows.
  CheckGpu("MatMul", {RandomTensor({2, 3, 33, 64}, -1, 1, 3), RandomTensor({64, 17}, -1, 1, 4)},
           {}, {false, true});
  // Batched, same batch dims (strided batch).
  CheckGpu("MatMul", {RandomTensor({4, 9, 8}, -1, 1, 5), RandomTensor({4, 8, 10}, -1, 1, 6)}, {});
  // Broadcast batch dims (one launch per matrix).
  CheckGpu("MatMul", {RandomTensor({2, 1, 4, 5}, -1, 1, 7), RandomTensor({3, 5, 6}, -1, 1, 8)}, {});
  CheckGpu("MatMul", {RandomTensor({5, 6}, -1, 1, 9), RandomTensor({3, 6, 2}, -1, 1, 10)}, {});
  // Vectors.
  CheckGpu("MatMul", {RandomTensor({6}, -1, 1, 11), RandomTensor({6, 4}, -1, 1, 12)}, {});
  CheckGpu("MatMul", {RandomTensor({3, 6}, -1, 1, 13), RandomTensor({6}, -1, 1, 14)}, {});
  CheckGpu("MatMul", {RandomTensor({6}, -1, 1, 15), RandomTensor({6}, -1, 1, 16)}, {});
  CheckGpu("MatMul", {RandomTensor({2, 3, 6}, -1, 1, 17), RandomTensor({6}, -1, 1, 18)}, {});
}

TEST(MatMulGpu, BFloat16AndTf32) {
  KILN_REQUIRE_GPU();
  std::vector<Tensor> inputs = {As(RandomTensor({64, 96}, -1, 1, 1), DType::kBFloat16),
                                As(RandomTensor({96, 40}, -1, 1, 2), DType::kBFloat16)};
  ExpectGpuMatchesCpu("MatMul", inputs, {}, {}, 3e-2, 3e-2);
  GpuNodeOptions tf32;
  tf32.precision.tf32 = true;
  ExpectGpuMatchesCpu("MatMul", {RandomTensor({64, 96}, -1, 1, 3), RandomTensor({96, 40}, -1, 1, 4)},
                      {}, tf32, 1e-2, 1e-2);
}

TEST(MatMulGpu, IntegerIsRejected) {
  KILN_REQUIRE_GPU();
  Tensor a = Tensor::FromInt64s({2, 2}, {1, 2, 3, 4});
  EXPECT_THROW(RunNodeOnGpu("MatMul", {a, a}, {}), Error);
}

TEST(GemmGpu, Variants) {
  KILN_REQUIRE_GPU();
  const Tensor a = RandomTensor({7, 5}, -1, 1, 1), at = RandomTensor({5, 7}, -1, 1, 2);
  const Tensor b = RandomTensor({5, 9}, -1, 1, 3), bt = RandomTensor({9, 5}, -1, 1, 4);
  auto attrs = [](int64_t ta, int64_t tb, float alpha, float beta) {
    ir::Attributes x;
    x.set("transA", ta);
    x.set("transB", tb);
    x.set("alpha", alpha);
    x.set("beta", beta);
    return x;
  };
  CheckGpu("Gemm", {a, b}, attrs(0, 0, 1.f, 1.f));
  CheckGpu("Gemm", {at, b}, attrs(1, 0, 1.f, 1.f));
  CheckGpu("Gemm", {a, bt}, attrs(0, 1, 0.5f, 1.f), {false, true});
  CheckGpu("Gemm", {at, bt}, attrs(1, 1, 2.f, 1.f));
  // C shapes: [N] (bias epilogue), [1, N], [M, 1], [M, N], scalar; beta != 1.
  CheckGpu("Gemm", {a, b, RandomTensor({9}, -1, 1, 5)}, attrs(0, 0, 1.f, 1.f), {false, true, true});
  CheckGpu("Gemm", {a, b, RandomTensor({1, 9}, -1, 1, 6)}, attrs(0, 0, 1.f, 0.5f));
  CheckGpu("Gemm", {a, b, RandomTensor({7, 1}, -1, 1, 7)}, attrs(0, 0, 1.5f, 2.f));
  CheckGpu("Gemm", {a, bt, RandomTensor({7, 9}, -1, 1, 8)}, attrs(0, 1, 1.f, -1.f));
  CheckGpu("Gemm", {at, b, RandomTensor({1}, -1, 1, 9)}, attrs(1, 0, 1.f, 1.f));
  CheckGpu("Gemm", {a, b, RandomTensor({7, 9}, -1, 1, 10)}, attrs(0, 0, 1.f, 0.f));
}

// float16 A and B writing float32 Y (the builder folds a logits Cast into the
// product); C / bias is then float32 too.
TEST(GemmGpu, Float16ProductWritesFloat32) {
  KILN_REQUIRE_GPU();
  const Tensor a = RandomTensor({7, 40}, -1, 1, 11).CastTo(DType::kFloat16);
  const Tensor bt = RandomTensor({24, 40}, -1, 1, 12).CastTo(DType::kFloat16);
  ir::Attributes attrs;
  attrs.set("transB", int64_t{1});
  GpuNodeOptions options;
  options.output_types = {{DType::kFloat32, ir::ShapeFromDims({7, 24})}};
  options.constant_inputs = {false, true, true};
  ExpectGpuMatchesCpu("Gemm", {a, bt, RandomTensor({24}, -1, 1, 13)}, attrs, options, kF16Rtol,
                      kF16Atol);  // Bias epilogue.
  ExpectGpuMatchesCpu("Gemm", {a, bt, RandomTensor({7, 24}, -1, 1, 14)}, attrs, options,
                      kF16Rtol, kF16Atol);  // Full C.
  ExpectGpuMatchesCpu("Gemm", {a, bt}, attrs, options, kF16Rtol, kF16Atol);
  // C must have Y's dtype.
  EXPECT_THROW(RunNodeOnGpu("Gemm", {a, bt, RandomTensor({24}, -1, 1, 15).CastTo(DType::kFloat16)},
                            attrs, options),
               Error);
}

// A product large enough (>= 4 GFLOP) for the tile and cluster variants of
// cuBLASLt's algorithms (cublaslt_util.h): every tactic against the CPU.
TEST(GemmGpu, LargeProductTileVariants) {
  KILN_REQUIRE_GPU();
  const Tensor a = RandomTensor({2048, 1024}, -1, 1, 21).CastTo(DType::kFloat16);
  const Tensor bt = RandomTensor({1024, 1024}, -1, 1, 22).CastTo(DType::kFloat16);
  ir::Attributes attrs;
  attrs.set("transB", int64_t{1});
  GpuNodeOptions options;
  options.constant_inputs = {false, true, true};
  ExpectGpuMatchesCpu("Gemm", {a, bt, RandomTensor({1024}, -1, 1, 23).CastTo(DType::kFloat16)},
                      attrs, options, kF16Rtol, 0.1);
}

// ---- KilnMatMul ----

void CheckKilnMatMul(const std::vector<int64_t>& a_dims, int64_t n, bool trans_b, bool bias,
                     const std::string& activation, const std::string& approximate, DType dtype,
                     bool residual = false) {
  SCOPED_TRACE(StrCat("KilnMatMul ", activation, approximate, " ", DTypeName(dtype),
                      trans_b ? " transB" : "", residual ? " residual" : ""));
  const int64_t k = a_dims.back();
  const Tensor a = Rounded(RandomTensor(a_dims, -1, 1, 41), dtype);
  const Tensor b = Rounded(RandomTensor(trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n},
                                        -1, 1, 42),
                           dtype);
  const Tensor bv = bias ? Rounded(RandomTensor({n}, -1, 1, 43), dtype) : Tensor();
  // Reference: MatMul(A, B or B^T) + bias, then the activation, on the host.
  Tensor b_mat = b;
  if (trans_b) {
    ir::Attributes perm;
    perm.set("perm", std::vector<int64_t>{1, 0});
    b_mat = RunNode("Transpose", {b}, perm)[0];
  }
  Tensor y = RunNode("MatMul", {a, b_mat})[0];
  if (bias) y = RunNode("Add", {y, bv})[0];
  const Tensor r = residual ? Rounded(RandomTensor(y.dims(), -2, 2, 44), dtype) : Tensor();
  std::string host_act = activation;
  if (activation == "Gelu") host_act = approximate == "tanh" ? "GeluTanh" : "GeluErf";
  const Tensor want = Epilogue(y, residual ? &r : nullptr, host_act);

  LayerCase c;
  c.op = "KilnMatMul";
  c.inputs = {As(a, dtype), As(b, dtype), As(bv, dtype)};
  c.constant = {false, true, true};
  if (residual) {
    c.inputs.push_back(As(r, dtype));
    c.constant.push_back(false);
  }
  c.attrs.set("transB", int64_t{trans_b ? 1 : 0});
  c.attrs.set("activation", activation);
  if (!approximate.empty()) c.attrs.set("gelu_approximate", approximate);
  c.out_dims = y.dims();
  c.capture = true;
  const bool f32 = dtype == DType::kFloat32;
  ExpectAllTactics(c, want, f32 ? kF32Rtol : kF16Rtol, f32 ? kF32Atol : 1e-2);
}

TEST(KilnMatMulGpu, BiasActivations) {
  KILN_REQUIRE_GPU();
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
    CheckKilnMatMul({33, 64}, 48, false, true, "Relu", "", dtype);
    CheckKilnMatMul({2, 5, 64}, 24, true, true, "Relu", "", dtype);
    CheckKilnMatMul({7, 16}, 8, false, true, "", "", dtype);
    CheckKilnMatMul({7, 16}, 8, false, false, "Relu", "", dtype);
    CheckKilnMatMul({9, 32}, 16, true, true, "Gelu", "tanh", dtype);
    CheckKilnMatMul({9, 32}, 16, false, false, "Gelu", "tanh", dtype);
    CheckKilnMatMul({9, 32}, 16, false, true, "Gelu", "none", dtype);
    CheckKilnMatMul({16}, 8, false, true, "Relu", "", dtype);
    CheckKilnMatMul({1, 1}, 1, false, true, "Relu", "", dtype);
  }
}

// The residual is cuBLASLt's C (beta = 1): act(A B + bias + R).
TEST(KilnMatMulGpu, Residual) {
  KILN_REQUIRE_GPU();
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    CheckKilnMatMul({2, 40, 64}, 48, false, true, "", "", dtype, /*residual=*/true);
    CheckKilnMatMul({33, 64}, 24, false, false, "", "", dtype, /*residual=*/true);
    CheckKilnMatMul({9, 32}, 16, true, true, "Relu", "", dtype, /*residual=*/true);
    CheckKilnMatMul({9, 32}, 16, false, true, "Gelu", "tanh", dtype, /*residual=*/true);
    CheckKilnMatMul({9, 32}, 16, false, true, "Gelu", "none", dtype, /*residual=*/true);
  }
}

// ---- Einsum ----

TEST(EinsumGpu, BatchedMatmulForms) {
  KILN_REQUIRE_GPU();
  auto eq = [](const char* e) {
    ir::Attributes a;
    a.set("equation", std::string(e));
    return a;
  };
  CheckGpu("Einsum", {RandomTensor({3, 4, 5}, -1, 1, 1), RandomTensor({3, 5, 6}, -1, 1, 2)},
           eq("bij,bjk->bik"));
  CheckGpu("Einsum", {RandomTensor({2, 3, 7, 8}, -1, 1, 3), RandomTensor({2, 3, 9, 8}, -1, 1, 4)},
           eq("bhqd,bhkd->bhqk"));
  CheckGpu("Einsum", {RandomTensor({4, 6}, -1, 1, 5), RandomTensor({5, 6}, -1, 1, 6)},
           eq("ij,kj->ik"));
  CheckGpu("Einsum", {RandomTensor({3, 4, 5}, -1, 1, 7), RandomTensor({3, 5, 6}, -1, 1, 8)},
           eq("bik,bkj->bji"));
  CheckGpu("Einsum", {RandomTensor({6, 4}, -1, 1, 9), RandomTensor({6, 5}, -1, 1, 10)},
           eq("ki,kj->ij"));
  CheckGpu("Einsum", {RandomTensor({2, 3, 4, 5}, -1, 1, 11), RandomTensor({5, 6}, -1, 1, 12)},
           eq("...k,kn->...n"));
  CheckGpu("Einsum", {RandomTensor({4}, -1, 1, 13), RandomTensor({5}, -1, 1, 14)},
           eq("i,j->ij"));
  CheckGpu("Einsum", {RandomTensor({7}, -1, 1, 15), RandomTensor({7}, -1, 1, 16)}, eq("i,i->"));
}

TEST(EinsumGpu, UnsupportedFormsThrow) {
  KILN_REQUIRE_GPU();
  ir::Attributes a;
  a.set("equation", std::string("ij,jk->ikj"));  // j kept: a batch label, but not outermost.
  EXPECT_THROW(RunNodeOnGpu("Einsum", {RandomTensor({2, 3}), RandomTensor({3, 4})}, a), Error);
  ir::Attributes b;
  b.set("equation", std::string("ij->ji"));
  EXPECT_THROW(RunNodeOnGpu("Einsum", {RandomTensor({2, 3})}, b), Error);
}

// ---- CUDA graph capture of the multi-step paths ----

void CheckCaptured(const std::string& op, const std::vector<Tensor>& inputs,
                   const ir::Attributes& attrs, const std::vector<bool>& constant) {
  SCOPED_TRACE(StrCat(op, " captured"));
  const Tensor want = RunNode(op, inputs, attrs, 1, 17, constant)[0];
  LayerCase c;
  c.op = op;
  c.inputs = inputs;
  c.constant = constant;
  c.attrs = attrs;
  c.out_dims = want.dims();
  c.capture = true;
  ExpectAllTactics(c, want, kF32Rtol, kF32Atol);
}

TEST(NnGpu, CapturesIntoCudaGraphs) {
  KILN_REQUIRE_GPU();
  // Conv with asymmetric pads (pad copy + convolution + bias epilogue).
  CheckCaptured("Conv",
                {RandomTensor({2, 4, 9, 8}, -1, 1, 51), RandomTensor({5, 4, 3, 3}, -1, 1, 52),
                 RandomTensor({5}, -1, 1, 53)},
                ConvAttrs({0, 1, 2, 1}, {2, 1}), {false, true, true});
  // ConvTranspose cropped from the uncropped result, with bias.
  CheckCaptured("ConvTranspose",
                {RandomTensor({1, 3, 4, 4}, -1, 1, 54), RandomTensor({3, 2, 3, 3}, -1, 1, 55),
                 RandomTensor({2}, -1, 1, 56)},
                ConvAttrs({0, 1, 1, 0}, {2, 2}), {false, true, true});
  // Gemm with a broadcast C (copy kernel + in-place GEMM).
  ir::Attributes gemm;
  gemm.set("beta", 2.f);
  CheckCaptured("Gemm",
                {RandomTensor({6, 5}, -1, 1, 57), RandomTensor({5, 7}, -1, 1, 58),
                 RandomTensor({6, 1}, -1, 1, 59)},
                gemm, {false, true, true});
  // MatMul over broadcast batch dims (one GEMM per matrix).
  CheckCaptured("MatMul", {RandomTensor({2, 1, 4, 5}, -1, 1, 60), RandomTensor({3, 5, 6}, -1, 1, 61)},
                {}, {false, false});
}

// ---- Timings (not run by default: --gtest_also_run_disabled_tests) ----

// Times every tactic of a layer on random data; prints TFLOP/s.
void TimeLayer(const LayerCase& c, double flops) {
  ir::Graph graph;
  ir::Node* node = graph.AddNode(c.op, "bench_" + c.op, {}, {});
  node->attrs = c.attrs;
  LayerInit init{*node, {}, {}, {}, c.precision, TestHandles()};
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  LaunchArgs args;
  args.handles = init.handles;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    TensorDesc d;
    if (c.inputs[i].defined()) {
      d.dtype = c.inputs[i].dtype();
      d.dims = c.inputs[i].dims();
      d.layout = i < c.layouts.size() ? c.layouts[i] : Layout::kRowMajor;
      buffers.push_back(std::make_unique<DeviceBuffer>(c.inputs[i].nbytes()));
      KILN_CUDA_CHECK(cudaMemcpy(buffers.back()->ptr, c.inputs[i].raw_data(), c.inputs[i].nbytes(),
                                 cudaMemcpyHostToDevice));
      args.inputs.push_back(buffers.back()->ptr);
    } else {
      args.inputs.push_back(nullptr);
    }
    init.inputs.push_back(d);
    init.constants.push_back(nullptr);
  }
  TensorDesc out_desc;
  out_desc.dtype = c.inputs[0].dtype();
  out_desc.dims = c.out_dims;
  out_desc.layout = c.out_layout;
  init.outputs.push_back(out_desc);
  DeviceBuffer out(out_desc.nbytes());
  args.outputs.push_back(out.ptr);
  std::unique_ptr<Layer> layer = GpuLayerRegistry::Global().Find(c.op)->create(init);
  cudaStream_t stream = nullptr;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  args.stream = stream;
  for (int tactic = 0; tactic < layer->NumTactics(); ++tactic) {
    layer->SetTactic(tactic);
    DeviceBuffer workspace(layer->WorkspaceBytes());
    args.workspace = workspace.ptr;
    const double seconds = testing::TimeEnqueueMs(*layer, args) / 1e3;
    std::printf("  %s %-55s %9.1f us %7.1f TFLOP/s\n", c.op.c_str(), layer->TacticName().c_str(),
                seconds * 1e6, flops / seconds / 1e12);
  }
  KILN_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(NnGpuPerf, DISABLED_Timings) {
  KILN_REQUIRE_GPU();
  const DType h = DType::kFloat16;
  {
    LayerCase c;  // ResNet 3x3 256-channel block conv, batch 256, NHWC FP16, fused.
    c.op = "KilnConv";
    c.inputs = {As(RandomTensor({256, 256, 14, 14}), h), As(RandomTensor({256, 256, 3, 3}), h),
                As(RandomTensor({256}), h), As(RandomTensor({256, 256, 14, 14}), h)};
    c.layouts = {Layout::kNHWC, Layout::kNHWC, Layout::kRowMajor, Layout::kNHWC};
    c.attrs = ConvAttrs({1, 1, 1, 1});
    c.attrs.set("activation", std::string("Relu"));
    c.out_dims = {256, 256, 14, 14};
    c.out_layout = Layout::kNHWC;
    TimeLayer(c, 2.0 * 256 * 256 * 14 * 14 * 256 * 9);
  }
  {
    LayerCase c;  // ResNet's RGB input conv, batch 256.
    c.op = "KilnConv";
    c.inputs = {As(RandomTensor({256, 3, 224, 224}), h), As(RandomTensor({64, 3, 7, 7}), h),
                As(RandomTensor({64}), h)};
    c.layouts = {Layout::kNHWC, Layout::kNHWC};
    c.attrs = ConvAttrs({3, 3, 3, 3}, {2, 2});
    c.attrs.set("activation", std::string("Relu"));
    c.out_dims = {256, 64, 112, 112};
    c.out_layout = Layout::kNHWC;
    TimeLayer(c, 2.0 * 256 * 64 * 112 * 112 * 3 * 49);
    c.layouts = {};  // The same in NCHW.
    c.out_layout = Layout::kRowMajor;
    TimeLayer(c, 2.0 * 256 * 64 * 112 * 112 * 3 * 49);
  }
  for (const char* act : {"", "Gelu"}) {
    LayerCase c;  // BERT-base FFN up-projection.
    c.op = "KilnMatMul";
    c.inputs = {As(RandomTensor({16384, 768}), h), As(RandomTensor({768, 3072}), h),
                As(RandomTensor({3072}), h)};
    c.attrs.set("transB", int64_t{0});
    c.attrs.set("activation", std::string(act));
    c.attrs.set("gelu_approximate", std::string("tanh"));
    c.out_dims = {16384, 3072};
    TimeLayer(c, 2.0 * 16384 * 3072 * 768);
  }
}

}  // namespace
}  // namespace kiln::gpu
