// GPU tests of the fused attention layer (layers/attention.cc): the layer
// against the CPU backend running the unfused ONNX subgraph (Reshape,
// Transpose, MatMul, Mul, Add, Softmax, ...) on the same rounded inputs, and
// an engine-level check: a small 2-layer BERT-like model built FP16/BF16
// (attention fused) against the CPU backend. Skips where no GPU is present.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
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

namespace kiln::gpu {
namespace {

namespace fs = std::filesystem;
using cuda::DeviceBuffer;
using kiln::testing::RandomTensor;
using kiln::testing::RunNode;

Tensor As(const Tensor& t, DType dtype) {
  if (!t.defined() || t.dtype() == dtype) return t;
  return t.CastTo(dtype);
}

ir::Attributes Perm(std::vector<int64_t> perm) {
  ir::Attributes a;
  a.set("perm", std::move(perm));
  return a;
}

Tensor Shape(std::vector<int64_t> dims) {
  const int64_t n = static_cast<int64_t>(dims.size());
  return Tensor::FromInt64s({n}, dims);
}

Tensor Reshape(const Tensor& x, std::vector<int64_t> dims) {
  return RunNode("Reshape", {x, Shape(std::move(dims))}, {}, 1, 17, {false, true})[0];
}

// The unfused subgraph on the CPU backend (float32 inputs): q [b,sq,h*d],
// k/v [b,sk,h*d], mask broadcastable to [b,h,sq,sk] or undefined.
Tensor ReferenceAttention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                          int64_t heads, float scale) {
  const int64_t b = q.dim(0), sq = q.dim(1), sk = k.dim(1), d = q.dim(2) / heads;
  Tensor qt = RunNode("Transpose", {Reshape(q, {b, sq, heads, d})}, Perm({0, 2, 1, 3}))[0];
  Tensor kt = RunNode("Transpose", {Reshape(k, {b, sk, heads, d})}, Perm({0, 2, 3, 1}))[0];
  Tensor vt = RunNode("Transpose", {Reshape(v, {b, sk, heads, d})}, Perm({0, 2, 1, 3}))[0];
  Tensor s = RunNode("MatMul", {qt, kt})[0];
  s = RunNode("Mul", {s, Tensor::Scalar(scale)})[0];
  if (mask.defined()) s = RunNode("Add", {s, mask})[0];
  ir::Attributes axis;
  axis.set("axis", int64_t{-1});
  Tensor p = RunNode("Softmax", {s}, axis)[0];
  Tensor ctx = RunNode("MatMul", {p, vt})[0];
  Tensor merged = RunNode("Transpose", {ctx}, Perm({0, 2, 1, 3}))[0];
  return Reshape(merged, {b, sq, heads * d});
}

// The KilnAttention layer created directly (it has no CPU/inference entry)
// with its inputs uploaded and an output buffer. misalign_bytes > 0 places
// every input and the output that many bytes past an allocation's start (the
// mma tactics then fall back to the WMMA kernel).
struct AttentionRig {
  std::unique_ptr<Layer> layer;
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  LaunchArgs args;  // args.stream is set by the caller.
  DType dtype = DType::kUndefined;
  std::vector<int64_t> out_dims;
  size_t out_bytes = 0;

  Tensor Download() const {
    Tensor t(dtype, out_dims);
    KILN_CUDA_CHECK(
        cudaMemcpy(t.raw_data(), args.outputs[0], t.nbytes(), cudaMemcpyDeviceToHost));
    return t;
  }
  void PoisonOutput() const {
    KILN_CUDA_CHECK(cudaMemset(args.outputs[0], 0xFF, out_bytes));  // NaN in float16/bfloat16.
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
  }
};

AttentionRig MakeAttentionRig(const std::vector<Tensor>& inputs, int64_t heads, float scale,
                              const std::vector<int64_t>& out_dims, size_t misalign_bytes = 0,
                              bool packed_qkv = false) {
  ir::Graph graph;
  graph.opset_version = 17;
  std::vector<ir::Value*> node_inputs;
  for (size_t i = 0; i < inputs.size(); ++i)
    node_inputs.push_back(graph.AddValue("in" + std::to_string(i), ir::TensorType::Of(inputs[i])));
  const DType dtype = inputs[0].dtype();
  ir::Value* out_value = graph.AddValue("out", {dtype, ir::ShapeFromDims(out_dims)});
  ir::Node* node = graph.AddNode("KilnAttention", "attention", node_inputs, {out_value});
  node->attrs.set("num_heads", heads);
  node->attrs.set("scale", scale);
  if (packed_qkv) node->attrs.set("packed_qkv", int64_t{1});

  LayerInit init{*node, {}, {}, {}, {}, {}};
  init.precision.fp16 = dtype == DType::kFloat16;
  init.precision.bf16 = dtype == DType::kBFloat16;
  for (const Tensor& t : inputs) {
    TensorDesc d;
    d.dtype = t.dtype();
    d.dims = t.dims();
    init.inputs.push_back(d);
    init.constants.push_back(nullptr);
  }
  TensorDesc out_desc;
  out_desc.dtype = dtype;
  out_desc.dims = out_dims;
  init.outputs.push_back(out_desc);
  const GpuOpDef* def = GpuLayerRegistry::Global().Find("KilnAttention");
  KILN_CHECK(def, "no GPU layer for KilnAttention");

  AttentionRig rig;
  rig.layer = def->create(init);
  EXPECT_EQ(rig.layer->WorkspaceBytes(), 0u);
  rig.dtype = dtype;
  rig.out_dims = out_dims;
  rig.out_bytes = out_desc.nbytes();
  auto allocate = [&](size_t bytes) {
    rig.buffers.push_back(std::make_unique<DeviceBuffer>(bytes + misalign_bytes));
    return static_cast<char*>(rig.buffers.back()->ptr) + misalign_bytes;
  };
  for (const Tensor& t : inputs) {
    char* ptr = allocate(t.nbytes());
    KILN_CUDA_CHECK(cudaMemcpy(ptr, t.raw_data(), t.nbytes(), cudaMemcpyHostToDevice));
    rig.args.inputs.push_back(ptr);
  }
  rig.args.outputs.push_back(allocate(rig.out_bytes));
  return rig;
}

struct TacticOutput {
  std::string tactic;
  Tensor output;  // float32.
};

// Runs every tactic of the layer explicitly (SetTactic) on poisoned (NaN)
// output memory, then again from a captured CUDA graph, and returns each
// tactic's first output as float32. The graph replay must give identical
// bytes.
std::vector<TacticOutput> RunAttentionLayer(const std::vector<Tensor>& inputs, int64_t heads,
                                            float scale, const std::vector<int64_t>& out_dims,
                                            size_t misalign_bytes = 0, bool packed_qkv = false) {
  AttentionRig rig = MakeAttentionRig(inputs, heads, scale, out_dims, misalign_bytes, packed_qkv);
  cudaStream_t stream = nullptr;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  rig.args.stream = stream;
  std::vector<TacticOutput> results;
  for (int tactic = 0; tactic < rig.layer->NumTactics(); ++tactic) {
    rig.layer->SetTactic(tactic);
    SCOPED_TRACE(rig.layer->TacticName());
    rig.PoisonOutput();
    rig.layer->Enqueue(rig.args);
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    KILN_CUDA_CHECK(cudaGetLastError());
    Tensor direct = rig.Download();

    // The same launch captured into a CUDA graph and replayed.
    rig.PoisonOutput();
    cudaGraph_t cuda_graph = nullptr;
    KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    rig.layer->Enqueue(rig.args);
    KILN_CUDA_CHECK(cudaStreamEndCapture(stream, &cuda_graph));
    cudaGraphExec_t exec = nullptr;
    KILN_CUDA_CHECK(cudaGraphInstantiate(&exec, cuda_graph, 0));
    KILN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    Tensor replayed = rig.Download();
    KILN_CUDA_CHECK(cudaGraphExecDestroy(exec));
    KILN_CUDA_CHECK(cudaGraphDestroy(cuda_graph));
    EXPECT_EQ(0, std::memcmp(direct.raw_data(), replayed.raw_data(), direct.nbytes()))
        << "CUDA graph replay differs from the direct launch";
    results.push_back({rig.layer->TacticName(), As(direct, DType::kFloat32)});
  }
  KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  return results;
}

void ExpectClose(const Tensor& got, const Tensor& want, double rtol, double atol,
                 const std::string& label) {
  ASSERT_EQ(got.dims(), want.dims());
  const std::vector<float> g = got.ToFloatVector(), w = want.ToFloatVector();
  double worst = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_TRUE(std::isfinite(g[i])) << "element " << i << " not written or not finite: " << g[i];
    ASSERT_LE(std::fabs(g[i] - w[i]), atol + rtol * std::fabs(w[i]))
        << "element " << i << ": gpu " << g[i] << " cpu " << w[i];
    worst = std::max(worst, static_cast<double>(std::fabs(g[i] - w[i])));
  }
  std::cout << "    " << label << ": max |gpu - cpu| = " << worst << "\n";
}

struct Case {
  DType dtype = DType::kFloat16;
  int64_t batch = 1, q_len = 128, kv_len = 128, heads = 3, head_dim = 64;
  // "none", "batch" ([b,1,1,sk] masking a tail of keys per batch row),
  // "shared" ([sk], random finite bias).
  std::string mask = "none";
  bool rank4 = false;  // Q/K/V/output as [b,s,h,d].
  size_t misalign_bytes = 0;  // See MakeAttentionRig.
  bool packed_qkv = false;    // One [b, s, 3*h*d] input (needs q_len == kv_len).
};

// [b, s, 3*h*d] rows [Q row | K row | V row], as PackAttentionQkv's GEMM writes.
Tensor PackRows(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t rows = q.dim(0) * q.dim(1), hd = q.dim(2);
  Tensor out(DType::kFloat32, {q.dim(0), q.dim(1), 3 * hd});
  for (int64_t r = 0; r < rows; ++r) {
    const Tensor* parts[3] = {&q, &k, &v};
    for (int64_t p = 0; p < 3; ++p)
      std::memcpy(out.data<float>() + (3 * r + p) * hd, parts[p]->data<float>() + r * hd,
                  static_cast<size_t>(hd) * sizeof(float));
  }
  return out;
}

void CheckAttention(const Case& c) {
  SCOPED_TRACE(StrCat(DTypeName(c.dtype), " batch ", c.batch, " q_len ", c.q_len, " kv_len ",
                      c.kv_len, " heads ", c.heads, " head_dim ", c.head_dim, " mask ", c.mask,
                      c.rank4 ? " rank4" : "", c.misalign_bytes ? " misaligned" : "",
                      c.packed_qkv ? " packed QKV" : ""));
  const int64_t hd = c.heads * c.head_dim;
  // Scores of a few units so the softmax is far from uniform.
  const Tensor q =
      As(As(RandomTensor({c.batch, c.q_len, hd}, -1.5f, 1.5f, 11), c.dtype), DType::kFloat32);
  const Tensor k =
      As(As(RandomTensor({c.batch, c.kv_len, hd}, -1.5f, 1.5f, 12), c.dtype), DType::kFloat32);
  const Tensor v =
      As(As(RandomTensor({c.batch, c.kv_len, hd}, -1.f, 1.f, 13), c.dtype), DType::kFloat32);
  Tensor mask;
  if (c.mask == "batch") {
    std::vector<float> bias(static_cast<size_t>(c.batch * c.kv_len), 0.f);
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t masked = (b * 17) % c.kv_len;  // Row 0 keeps every key.
      for (int64_t j = c.kv_len - masked; j < c.kv_len; ++j)
        bias[static_cast<size_t>(b * c.kv_len + j)] = -10000.f;
    }
    mask = Tensor::FromFloats({c.batch, 1, 1, c.kv_len}, bias);
  } else if (c.mask == "shared") {
    mask = As(As(RandomTensor({c.kv_len}, -3.f, 1.f, 14), c.dtype), DType::kFloat32);
  }
  const float scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  const Tensor want = ReferenceAttention(q, k, v, mask, c.heads, scale);

  auto shaped = [&](const Tensor& t) {
    return c.rank4 ? Reshape(t, {t.dim(0), t.dim(1), c.heads, c.head_dim}) : t;
  };
  std::vector<Tensor> inputs = {As(shaped(q), c.dtype), As(shaped(k), c.dtype),
                                As(shaped(v), c.dtype)};
  if (c.packed_qkv) inputs = {As(PackRows(q, k, v), c.dtype)};
  if (mask.defined()) inputs.push_back(As(mask, c.dtype));
  std::vector<int64_t> out_dims = {c.batch, c.q_len, hd};
  if (c.rank4) out_dims = {c.batch, c.q_len, c.heads, c.head_dim};
  const std::vector<TacticOutput> results =
      RunAttentionLayer(inputs, c.heads, scale, out_dims, c.misalign_bytes, c.packed_qkv);
  // Every supported (dtype, head dim) has the WMMA and the four mma tactics.
  EXPECT_EQ(results.size(), 5u);
  for (const TacticOutput& r : results) {
    SCOPED_TRACE(r.tactic);
    const Tensor got = c.rank4 ? Reshape(r.output, {c.batch, c.q_len, hd}) : r.output;
    // Outputs are averages of V in [-1, 1]; P and the output are rounded to
    // the storage type.
    const bool bf16 = c.dtype == DType::kBFloat16;
    ExpectClose(got, want, bf16 ? 2e-2 : 5e-3, bf16 ? 1e-2 : 2e-3, r.tactic);
  }
}

TEST(AttentionGpu, SeqLengthsMasksAndBatches) {
  KILN_REQUIRE_GPU();
  for (DType dtype : {DType::kFloat16, DType::kBFloat16})
    for (int64_t seq : {128, 77, 200})
      for (const char* mask : {"none", "batch"})
        for (int64_t batch : {1, 3}) {
          Case c;
          c.dtype = dtype;
          c.q_len = c.kv_len = seq;
          c.mask = mask;
          c.batch = batch;
          CheckAttention(c);
        }
}

TEST(AttentionGpu, HeadDimsSharedMaskAndShortSequences) {
  KILN_REQUIRE_GPU();
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t head_dim : {32, 128})
      for (int64_t seq : {70, 200}) {
        Case c;
        c.dtype = dtype;
        c.head_dim = head_dim;
        c.heads = 2;
        c.batch = 2;
        c.q_len = c.kv_len = seq;
        c.mask = "batch";
        CheckAttention(c);
      }
    for (int64_t seq : {1, 5, 64, 65}) {
      Case c;
      c.dtype = dtype;
      c.q_len = c.kv_len = seq;
      c.mask = "shared";
      c.batch = 2;
      CheckAttention(c);
    }
  }
}

TEST(AttentionGpu, CrossAttentionLengthsAndRank4Layout) {
  KILN_REQUIRE_GPU();
  Case c;
  c.batch = 2;
  c.q_len = 50;
  c.kv_len = 130;
  c.mask = "batch";
  CheckAttention(c);
  c.q_len = 129;
  c.kv_len = 3;
  c.mask = "shared";
  c.rank4 = true;
  CheckAttention(c);
}

// Base pointers that are not 16-byte aligned: the mma tactics cannot use
// cp.async and run the WMMA kernel's unaligned path instead.
// One packed QKV projection read with a row stride of 3*h*d (BERT after
// PackAttentionQkv), every tactic, masks, ragged lengths, a misaligned base
// (the WMMA kernel's scalar path and the mma kernel's fallback).
TEST(AttentionGpu, PackedQkv) {
  KILN_REQUIRE_GPU();
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t s : {128, 77, 1}) {
      Case c;
      c.dtype = dtype;
      c.batch = 3;
      c.q_len = c.kv_len = s;
      c.heads = 4;
      c.head_dim = 64;
      c.mask = "batch";
      c.packed_qkv = true;
      CheckAttention(c);
    }
    Case c;
    c.dtype = dtype;
    c.q_len = c.kv_len = 40;
    c.heads = 2;
    c.head_dim = 32;
    c.packed_qkv = true;
    c.misalign_bytes = 2;
    CheckAttention(c);
    c.head_dim = 128;
    c.misalign_bytes = 0;
    c.mask = "shared";
    CheckAttention(c);
  }
}

TEST(AttentionGpu, MisalignedPointers) {
  KILN_REQUIRE_GPU();
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    Case c;
    c.dtype = dtype;
    c.batch = 2;
    c.q_len = c.kv_len = 77;
    c.mask = "batch";
    c.misalign_bytes = 2;
    CheckAttention(c);
  }
}

TEST(AttentionGpu, TacticsAreDistinctAndChecked) {
  KILN_REQUIRE_GPU();
  const Tensor q = RandomTensor({1, 4, 128}).CastTo(DType::kFloat16);
  AttentionRig rig = MakeAttentionRig({q, q, q}, 2, 1.f, {1, 4, 128});
  ASSERT_EQ(rig.layer->NumTactics(), 5);
  std::vector<std::string> names;
  for (int t = 0; t < rig.layer->NumTactics(); ++t) {
    rig.layer->SetTactic(t);
    names.push_back(rig.layer->TacticName());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"flash_wmma_64x64", "flash_mma_m16n8k16",
                                             "flash_mma_m16n8k16_occ4", "flash_mma_m16n8k16_w8",
                                             "flash_mma_m16n8k16_w8_occ2"}));
  EXPECT_THROW(rig.layer->SetTactic(5), Error);
  EXPECT_THROW(rig.layer->SetTactic(-1), Error);
}

// Not a check but a measurement (run with --gtest_also_run_disabled_tests):
// every tactic at BERT-base's attention shape (batch 128, seq 128, 12 heads,
// head dim 64, a [b,1,1,s] mask), timed with CUDA events; each mma tactic's
// output must also agree with the WMMA kernel's.
TEST(AttentionGpu, DISABLED_BertBaseTacticTimes) {
  KILN_REQUIRE_GPU();
  const int64_t batch = 128, seq = 128, heads = 12, head_dim = 64, hd = heads * head_dim;
  const int kWarmup = 5, kIterations = 50;
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(DTypeName(dtype));
    std::vector<float> bias(static_cast<size_t>(batch * seq), 0.f);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = seq - (b * 7) % (seq / 2); j < seq; ++j)
        bias[static_cast<size_t>(b * seq + j)] = -10000.f;
    const std::vector<Tensor> inputs = {
        RandomTensor({batch, seq, hd}, -1.5f, 1.5f, 21).CastTo(dtype),
        RandomTensor({batch, seq, hd}, -1.5f, 1.5f, 22).CastTo(dtype),
        RandomTensor({batch, seq, hd}, -1.f, 1.f, 23).CastTo(dtype),
        Tensor::FromFloats({batch, 1, 1, seq}, bias).CastTo(dtype)};
    AttentionRig rig = MakeAttentionRig(inputs, heads, 0.125f, {batch, seq, hd});
    cudaStream_t stream = nullptr;
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    rig.args.stream = stream;
    const double flops = 4.0 * batch * heads * seq * seq * head_dim;
    Tensor reference;
    for (int t = 0; t < rig.layer->NumTactics(); ++t) {
      rig.layer->SetTactic(t);
      rig.PoisonOutput();
      const double ms = testing::TimeEnqueueMs(*rig.layer, rig.args, kWarmup, kIterations);
      std::printf("  %s %-26s %.4f ms  %.1f TFLOP/s\n", DTypeName(dtype),
                  rig.layer->TacticName().c_str(), ms, flops / (ms * 1e-3) / 1e12);
      const Tensor out = As(rig.Download(), DType::kFloat32);
      if (t == 0) {
        reference = out;
      } else {
        const bool bf16 = dtype == DType::kBFloat16;
        ExpectClose(out, reference, bf16 ? 2e-2 : 5e-3, bf16 ? 2e-2 : 4e-3,
                    rig.layer->TacticName() + " vs flash_wmma_64x64");
      }
    }
    KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  }
}

TEST(AttentionGpu, RejectsWhatItCannotRun) {
  KILN_REQUIRE_GPU();
  const Tensor q = RandomTensor({1, 4, 96}).CastTo(DType::kFloat16);
  // head_dim 48 (96 / 2).
  EXPECT_THROW(RunAttentionLayer({q, q, q}, 2, 1.f, {1, 4, 96}), Error);
  // float32.
  const Tensor q32 = RandomTensor({1, 4, 128});
  EXPECT_THROW(RunAttentionLayer({q32, q32, q32}, 2, 1.f, {1, 4, 128}), Error);
  // A mask that varies over queries.
  const Tensor q16 = RandomTensor({1, 4, 128}).CastTo(DType::kFloat16);
  const Tensor bad_mask = RandomTensor({1, 1, 4, 4}).CastTo(DType::kFloat16);
  EXPECT_THROW(RunAttentionLayer({q16, q16, q16, bad_mask}, 2, 1.f, {1, 4, 128}), Error);
  // num_heads that does not divide the hidden size.
  EXPECT_THROW(RunAttentionLayer({q16, q16, q16}, 3, 1.f, {1, 4, 128}), Error);
}

// ---- Engine level: a small BERT-like encoder written as ONNX ----

class OnnxWriter {
 public:
  OnnxWriter() {
    model_.set_ir_version(8);
    auto* opset = model_.add_opset_import();
    opset->set_domain("");
    opset->set_version(17);
    graph_ = model_.mutable_graph();
    graph_->set_name("bert_like");
  }
  void Input(const std::string& name, const std::vector<int64_t>& dims) {
    Declare(graph_->add_input(), name, dims);
  }
  void Output(const std::string& name, const std::vector<int64_t>& dims) {
    Declare(graph_->add_output(), name, dims);
  }
  void Initializer(const std::string& name, const Tensor& t) {
    ::onnx::TensorProto* p = graph_->add_initializer();
    p->set_name(name);
    for (int64_t d : t.dims()) p->add_dims(d);
    if (t.dtype() == DType::kInt64) {
      p->set_data_type(::onnx::TensorProto::INT64);
      for (int64_t i = 0; i < t.numel(); ++i) p->add_int64_data(t.data<int64_t>()[i]);
    } else {
      p->set_data_type(::onnx::TensorProto::FLOAT);
      for (float f : t.ToFloatVector()) p->add_float_data(f);
    }
  }
  ::onnx::NodeProto* Node(const std::string& op, const std::vector<std::string>& inputs,
                          const std::string& output) {
    ::onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op);
    n->set_name(output + "_node");
    for (const std::string& i : inputs) n->add_input(i);
    n->add_output(output);
    return n;
  }
  static void Ints(::onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    ::onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void Int(::onnx::NodeProto* n, const std::string& name, int64_t v) {
    ::onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INT);
    a->set_i(v);
  }
  void Save(const fs::path& path) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    KILN_CHECK(out && model_.SerializeToOstream(&out), "cannot write ", path.string());
  }

 private:
  static void Declare(::onnx::ValueInfoProto* info, const std::string& name,
                      const std::vector<int64_t>& dims) {
    info->set_name(name);
    auto* tensor_type = info->mutable_type()->mutable_tensor_type();
    tensor_type->set_elem_type(::onnx::TensorProto::FLOAT);
    auto* shape = tensor_type->mutable_shape();
    for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
  }
  ::onnx::ModelProto model_;
  ::onnx::GraphProto* graph_ = nullptr;
};

// x [b, s, heads*64] -> 2 post-LayerNorm attention blocks -> "y". Layer 0
// writes K^T as one Transpose [0,2,3,1], layer 1 as two (torch's k.transpose).
void WriteBertLike(const fs::path& path, int64_t b, int64_t s, int64_t heads) {
  const int64_t d = 64, hd = heads * d;
  OnnxWriter w;
  w.Input("x", {b, s, hd});
  w.Input("attention_mask", {b, s});
  w.Output("y", {b, s, hd});
  uint32_t seed = 100;
  w.Initializer("one", Tensor::Scalar(1.f));
  w.Initializer("neg_big", Tensor::Scalar(-10000.f));
  w.Initializer("sqrt_d", Tensor::Scalar(8.f));
  w.Initializer("mask_axes", Tensor::FromInt64s({2}, {1, 2}));
  w.Initializer("split_shape", Tensor::FromInt64s({4}, {b, s, heads, d}));
  w.Initializer("merge_shape", Tensor::FromInt64s({3}, {b, s, hd}));
  w.Node("Unsqueeze", {"attention_mask", "mask_axes"}, "mask4");
  w.Node("Sub", {"one", "mask4"}, "inv_mask");
  w.Node("Mul", {"inv_mask", "neg_big"}, "mask_bias");
  std::string x = "x";
  for (int layer = 0; layer < 2; ++layer) {
    const std::string p = "l" + std::to_string(layer) + "_";
    auto linear = [&](const std::string& in, const std::string& name, float range) {
      w.Initializer(p + name + "_w", RandomTensor({hd, hd}, -range, range, seed++));
      w.Initializer(p + name + "_b", RandomTensor({hd}, -0.1f, 0.1f, seed++));
      w.Node("MatMul", {in, p + name + "_w"}, p + name + "_mm");
      w.Node("Add", {p + name + "_b", p + name + "_mm"}, p + name);
      return p + name;
    };
    auto split = [&](const std::string& in, std::vector<int64_t> perm, const std::string& out) {
      w.Node("Reshape", {in, "split_shape"}, out + "_split");
      OnnxWriter::Ints(w.Node("Transpose", {out + "_split"}, out), "perm", perm);
    };
    split(linear(x, "q", 0.3f), {0, 2, 1, 3}, p + "qt");
    if (layer == 0) {
      split(linear(x, "k", 0.3f), {0, 2, 3, 1}, p + "kt");
    } else {
      split(linear(x, "k", 0.3f), {0, 2, 1, 3}, p + "kh");
      OnnxWriter::Ints(w.Node("Transpose", {p + "kh"}, p + "kt"), "perm", {0, 1, 3, 2});
    }
    split(linear(x, "v", 0.15f), {0, 2, 1, 3}, p + "vt");
    w.Node("MatMul", {p + "qt", p + "kt"}, p + "scores");
    w.Node("Div", {p + "scores", "sqrt_d"}, p + "scaled");
    w.Node("Add", {p + "scaled", "mask_bias"}, p + "masked");
    OnnxWriter::Int(w.Node("Softmax", {p + "masked"}, p + "probs"), "axis", -1);
    w.Node("MatMul", {p + "probs", p + "vt"}, p + "ctx");
    OnnxWriter::Ints(w.Node("Transpose", {p + "ctx"}, p + "ctx_t"), "perm", {0, 2, 1, 3});
    w.Node("Reshape", {p + "ctx_t", "merge_shape"}, p + "merged");
    const std::string attn = linear(p + "merged", "o", 0.15f);
    w.Node("Add", {x, attn}, p + "residual");
    w.Initializer(p + "gamma", RandomTensor({hd}, 0.8f, 1.2f, seed++));
    w.Initializer(p + "beta", RandomTensor({hd}, -0.1f, 0.1f, seed++));
    const std::string out = layer == 1 ? "y" : p + "out";
    OnnxWriter::Int(w.Node("LayerNormalization", {p + "residual", p + "gamma", p + "beta"}, out),
                    "axis", -1);
    x = out;
  }
  w.Save(path);
}

void CheckEngine(Precision precision, int64_t b, int64_t s, double tolerance, int want_fused) {
  SCOPED_TRACE(StrCat(PrecisionName(precision), " batch ", b, " seq ", s));
  const int64_t heads = 2;
  const fs::path path =
      fs::temp_directory_path() / StrCat("kiln_attention_bert_like_", b, "_", s, ".onnx");
  WriteBertLike(path, b, s, heads);
  std::map<std::string, Tensor> inputs;
  inputs["x"] = RandomTensor({b, s, heads * 64}, -1.f, 1.f, 7);
  std::vector<float> mask(static_cast<size_t>(b * s), 1.f);
  for (int64_t row = 1; row < b; ++row)
    for (int64_t j = s - std::min<int64_t>(s - 1, 9 * row); j < s; ++j)
      mask[static_cast<size_t>(row * s + j)] = 0.f;
  inputs["attention_mask"] = Tensor::FromFloats({b, s}, mask);

  const std::vector<Tensor> want = Model::Load(path.string())->RunCpu(inputs);
  BuildConfig config;
  config.precision = precision;
  std::unique_ptr<Engine> engine = Engine::Build(path.string(), config);
  int fused = 0, softmax = 0, transposes = 0, matmuls = 0, adds = 0;
  for (const LayerInfo& l : engine->info().layers) {
    fused += l.op_type == "KilnAttention";
    softmax += l.op_type == "Softmax";
    transposes += l.op_type == "Transpose";
    matmuls += l.op_type == "KilnMatMul";
    adds += l.op_type == "Add";
  }
  EXPECT_EQ(fused, want_fused);
  // Per layer: Q, K, V and output projections, the residual Add fused into
  // the output GEMM; fused attention packs Q, K and V into one GEMM.
  EXPECT_EQ(matmuls, want_fused ? 4 : 8);
  EXPECT_EQ(adds, 0);
  if (want_fused) {
    EXPECT_EQ(softmax, 0);
    EXPECT_EQ(transposes, 0);
  }
  const std::vector<Tensor> got = engine->CreateContext()->Run(inputs);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].dims(), want[i].dims());
    for (float x : got[i].ToFloatVector()) ASSERT_TRUE(std::isfinite(x));
    const double err = kiln::testing::MaxRelativeError(got[i], want[i]);
    std::cout << "    " << PrecisionName(precision) << ": max|gpu-cpu|/max|cpu| = " << err << "\n";
    EXPECT_LE(err, tolerance);
  }
  fs::remove(path);
}

TEST(AttentionGpu, BertLikeEngineMatchesCpu) {
  KILN_REQUIRE_GPU();
  CheckEngine(Precision::kFP16, 3, 77, 1e-2, 2);
  CheckEngine(Precision::kFP16, 1, 128, 1e-2, 2);
  CheckEngine(Precision::kBF16, 3, 77, 4e-2, 2);
  // FP32 engines keep the unfused path.
  CheckEngine(Precision::kFP32, 2, 33, 1e-4, 0);
}

}  // namespace
}  // namespace kiln::gpu
