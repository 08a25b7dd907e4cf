// Generated kernels for fused elementwise programs (cuda/kernels/
// elementwise_codegen.h): the generated source compiles with NVRTC for sm_90
// (CPU-only, runs wherever libnvrtc loads), and on the GPU the generated
// kernels match the interpreter bit for bit and the unfused graph on the CPU
// backend, including under CUDA Graph capture.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "builder/fuse_elementwise.h"
#include "cpu/executor.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/elementwise_codegen.h"
#include "gpu_test_util.h"
#include "ops/registry.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln {
namespace {

using gpu::ew::Op;
using testing::RandomTensor;

// ---- Test programs ----

struct Instruction {
  Op op;
  int dst, a, b, c;
  float p0 = 0.f, p1 = 0.f;
};

struct TestProgram {
  std::string name;
  int num_inputs = 1;
  std::vector<Instruction> code;
  std::vector<float> immediates;
  int output = 0;
};

gpu::ew::Program ToProgram(const TestProgram& t) {
  gpu::ew::Program p;
  p.num_instructions = static_cast<int>(t.code.size());
  for (size_t i = 0; i < t.code.size(); ++i) {
    const Instruction& in = t.code[i];
    p.op[i] = static_cast<int32_t>(in.op);
    p.dst[i] = static_cast<int8_t>(in.dst);
    p.a[i] = static_cast<int8_t>(in.a);
    p.b[i] = static_cast<int8_t>(in.b);
    p.c[i] = static_cast<int8_t>(in.c);
    p.p0[i] = in.p0;
    p.p1[i] = in.p1;
  }
  for (size_t i = 0; i < t.immediates.size(); ++i) p.imm[i] = t.immediates[i];
  p.output = t.output;
  return p;
}

// x * 0.5 * (1 + erf(x / sqrt 2)) as FuseElementwise emits BERT's exact GELU.
TestProgram GeluErfChain() {
  return {"gelu_erf_chain",
          1,
          {{Op::kDiv, 1, 0, -1, 0},
           {Op::kErf, 1, 1, 0, 0},
           {Op::kAdd, 1, 1, -2, 0},
           {Op::kMul, 1, 0, 1, 0},
           {Op::kMul, 1, 1, -3, 0}},
          {1.4142135f, 1.f, 0.5f},
          1};
}

TestProgram AddRelu() {
  return {"add_relu", 2, {{Op::kAdd, 2, 0, 1, 0}, {Op::kRelu, 2, 2, 0, 0}}, {}, 2};
}

// Every fusible op once, over three inputs, with attribute parameters,
// immediate second and third operands and several live registers.
TestProgram EveryFusibleOp() {
  TestProgram t{"every_fusible_op", 3, {}, {0.75f, -1.25f, 2.5f}, 0};
  int last = 0;
  int dst = 3;
  for (int code = 0; code <= 80; ++code) {
    const Op op = static_cast<Op>(code);
    if (!gpu::ew::IsUnaryOp(op) && !gpu::ew::IsBinaryOp(op) && !gpu::ew::IsTernaryOp(op)) continue;
    if (!gpu::ew::IsFusibleOp(op)) continue;
    Instruction in{op, dst, last, 1, 2, 0.25f, 1.5f};
    if (op == Op::kClipConst || op == Op::kHardSigmoid) in.p0 = -0.5f;
    if (code % 3 == 0) in.b = -1 - (code / 3) % 3;  // Immediate operands too.
    if (code % 5 == 0) in.c = -1 - (code / 5) % 3;
    t.code.push_back(in);
    last = dst;
    dst = dst == 15 ? 3 : dst + 1;
  }
  t.output = last;
  return t;
}

std::vector<TestProgram> AllPrograms() {
  TestProgram gelu_op{"gelu_op", 1, {{Op::kGeluErf, 1, 0, 0, 0}}, {}, 1};
  return {GeluErfChain(), gelu_op, AddRelu(), EveryFusibleOp()};
}

// Flat indexing over `numel` elements; inputs listed in `scalars` are single
// broadcast elements.
gpu::ew::Indexing FlatIndexing(int num_inputs, int64_t numel, const std::vector<int>& scalars) {
  std::vector<std::vector<int64_t>> strides(static_cast<size_t>(num_inputs), {1});
  for (int k : scalars) strides[static_cast<size_t>(k)] = {0};
  return gpu::ew::MakeIndexing({numel}, strides);
}

// Sets or clears KILN_ELEMENTWISE_CODEGEN for a scope.
class ScopedCodegenEnv {
 public:
  explicit ScopedCodegenEnv(const char* value) {
    if (const char* old = std::getenv(kName)) old_ = old;
    if (value) {
      setenv(kName, value, 1);
    } else {
      unsetenv(kName);
    }
  }
  ~ScopedCodegenEnv() {
    if (old_) {
      setenv(kName, old_->c_str(), 1);
    } else {
      unsetenv(kName);
    }
  }

 private:
  static constexpr const char* kName = "KILN_ELEMENTWISE_CODEGEN";
  std::optional<std::string> old_;
};

#define KILN_REQUIRE_NVRTC()                                                        \
  do {                                                                              \
    ScopedCodegenEnv kiln_env_(nullptr);                                            \
    const std::string kiln_why_ = gpu::ew::CodegenUnavailableReason();             \
    if (!kiln_why_.empty()) GTEST_SKIP() << "NVRTC not usable: " << kiln_why_;      \
  } while (0)

// ---- CPU: generation and NVRTC compilation (no GPU needed) ----

TEST(ElementwiseCodegenTest, GeneratedSourceCompilesForSm90) {
  KILN_REQUIRE_NVRTC();
  for (const TestProgram& t : AllPrograms()) {
    std::vector<std::vector<int>> scalar_sets = {{}};
    if (t.num_inputs >= 2) scalar_sets.push_back({1});
    if (t.num_inputs >= 3) scalar_sets.push_back({0, 2});
    for (const std::vector<int>& scalars : scalar_sets) {
      for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        SCOPED_TRACE(t.name + " " + DTypeName(dtype) + " scalars " +
                     std::to_string(scalars.size()));
        const gpu::ew::Indexing ix = FlatIndexing(t.num_inputs, 1000003, scalars);
        ASSERT_TRUE(gpu::ew::CodegenSupports(ix));
        const std::string source = gpu::ew::GenerateFusedSource(dtype, ToProgram(t), ix);
        // Straight-line: one call of the shared op functions per instruction.
        size_t calls = 0;
        for (const char* fn : {"= Unary<float>(", "= Binary<float>(", "= Ternary<float>("})
          for (size_t at = source.find(fn); at != std::string::npos; at = source.find(fn, at + 1))
            ++calls;
        EXPECT_EQ(calls, t.code.size());
        EXPECT_EQ(source, gpu::ew::GenerateFusedSource(dtype, ToProgram(t), ix));
        std::vector<char> cubin;
        ASSERT_NO_THROW(cubin = gpu::ew::CompileFusedSource(source, 90)) << source;
        ASSERT_GE(cubin.size(), 4u);
        EXPECT_EQ(std::memcmp(cubin.data(), "\x7f" "ELF", 4), 0);  // A cubin is an ELF image.
      }
    }
  }
}

TEST(ElementwiseCodegenTest, BroadcastPatternChangesSource) {
  const TestProgram t = AddRelu();
  const std::string full = gpu::ew::GenerateFusedSource(DType::kFloat16, ToProgram(t),
                                                        FlatIndexing(2, 7, {}));
  const std::string scalar = gpu::ew::GenerateFusedSource(DType::kFloat16, ToProgram(t),
                                                          FlatIndexing(2, 7, {1}));
  EXPECT_NE(full, scalar);
  EXPECT_NE(scalar.find("const float s1 = "), std::string::npos) << scalar;
  EXPECT_EQ(full.find("const float s1 = "), std::string::npos) << full;
}

TEST(ElementwiseCodegenTest, StridedIndexingIsGeneratedWithConstantDims) {
  KILN_REQUIRE_NVRTC();
  // [5,7] + a [7] row: input 1 is neither the output's layout nor one element.
  const gpu::ew::Indexing row = gpu::ew::MakeIndexing({5, 7}, {{7, 1}, {0, 1}});
  // [3,4,5] + a [3,1,1] column, past 2^31 elements (64-bit index math).
  const gpu::ew::Indexing wide =
      gpu::ew::MakeIndexing({3, 1 << 20, 1024}, {{1 << 30, 1024, 1}, {1, 0, 0}});
  for (const gpu::ew::Indexing& ix : {row, wide}) {
    EXPECT_FALSE(ix.flat);
    ASSERT_TRUE(gpu::ew::CodegenSupports(ix));
    for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      SCOPED_TRACE(DTypeName(dtype));
      const std::string source = gpu::ew::GenerateFusedSource(dtype, ToProgram(AddRelu()), ix);
      EXPECT_NE(source.find(ix.index32 ? "rem / 7u" : "rem / 1073741824ll"), std::string::npos) << source;
      std::vector<char> cubin;
      ASSERT_NO_THROW(cubin = gpu::ew::CompileFusedSource(source, 90)) << source;
      EXPECT_EQ(std::memcmp(cubin.data(), "\x7f" "ELF", 4), 0);
    }
  }
}

TEST(ElementwiseCodegenTest, CompileErrorCarriesNvrtcLog) {
  KILN_REQUIRE_NVRTC();
  try {
    gpu::ew::CompileFusedSource("extern \"C\" __global__ void k() { undeclared_name(); }", 90);
    FAIL() << "expected a compilation error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("sm_90"), std::string::npos) << what;
    EXPECT_NE(what.find("undeclared_name"), std::string::npos) << what;
  }
}

TEST(ElementwiseCodegenTest, DisabledByEnvironment) {
  ScopedCodegenEnv env("0");
  EXPECT_NE(gpu::ew::CodegenUnavailableReason().find("KILN_ELEMENTWISE_CODEGEN=0"),
            std::string::npos);
}

// ---- GPU: generated kernels vs the interpreter vs the CPU backend ----

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { KILN_CUDA_CHECK(cudaMalloc(&ptr, bytes ? bytes : 1)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

std::unique_ptr<gpu::Layer> CreateLayer(const ir::Node& node, const std::vector<Tensor>& inputs,
                                        const std::vector<bool>& constant,
                                        const std::vector<int64_t>& out_dims, DType dtype,
                                        bool codegen) {
  ScopedCodegenEnv env(codegen ? nullptr : "0");
  gpu::LayerInit init{node, {}, {}, {}, {}, {}};
  for (size_t i = 0; i < inputs.size(); ++i) {
    gpu::TensorDesc d;
    d.dtype = inputs[i].dtype();
    d.dims = inputs[i].dims();
    init.inputs.push_back(d);
    init.constants.push_back(i < constant.size() && constant[i] ? &inputs[i] : nullptr);
  }
  gpu::TensorDesc out;
  out.dtype = dtype;
  out.dims = out_dims;
  init.outputs.push_back(out);
  return gpu::GpuLayerRegistry::Global().Find(node.op_type)->create(init);
}

// Runs the layer once with every pointer `misalign` elements past a 16-byte
// boundary and the output pre-filled with byte `fill`; returns the output.
Tensor RunOnce(const gpu::Layer& layer, const std::vector<Tensor>& inputs,
               const std::vector<int64_t>& out_dims, DType dtype, int misalign, int fill) {
  const size_t elem = DTypeSize(dtype);
  const size_t offset = static_cast<size_t>(misalign) * elem;
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  gpu::LaunchArgs args;
  for (const Tensor& t : inputs) {
    buffers.push_back(std::make_unique<DeviceBuffer>(t.nbytes() + 16));
    char* p = static_cast<char*>(buffers.back()->ptr) + offset;
    KILN_CUDA_CHECK(cudaMemcpy(p, t.raw_data(), t.nbytes(), cudaMemcpyHostToDevice));
    args.inputs.push_back(p);
  }
  Tensor result(dtype, out_dims);
  DeviceBuffer out(result.nbytes() + 16);
  char* o = static_cast<char*>(out.ptr) + offset;
  KILN_CUDA_CHECK(cudaMemset(o, fill, result.nbytes()));
  args.outputs.push_back(o);
  layer.Enqueue(args);
  KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  KILN_CUDA_CHECK(cudaMemcpy(result.raw_data(), o, result.nbytes(), cudaMemcpyDeviceToHost));
  return result;
}

// Runs the node with the generated kernel and with the interpreter, aligned
// and misaligned, with two output fills (so unwritten elements show), and
// expects every run bitwise identical. Returns the output.
Tensor ExpectCodegenMatchesInterpreter(const ir::Node& node, const std::vector<Tensor>& inputs,
                                       const std::vector<bool>& constant,
                                       const std::vector<int64_t>& out_dims, DType dtype) {
  const auto codegen = CreateLayer(node, inputs, constant, out_dims, dtype, true);
  const auto interpreter = CreateLayer(node, inputs, constant, out_dims, dtype, false);
  EXPECT_EQ(codegen->TacticName(), "codegen");
  EXPECT_EQ(interpreter->TacticName(), "interpreter");
  const Tensor want = RunOnce(*interpreter, inputs, out_dims, dtype, 0, 0xFF);
  struct Run {
    const gpu::Layer* layer;
    int misalign, fill;
  };
  for (const Run& r : {Run{interpreter.get(), 0, 0x00}, Run{codegen.get(), 0, 0xFF},
                       Run{codegen.get(), 0, 0x00}, Run{codegen.get(), 1, 0xFF},
                       Run{codegen.get(), 1, 0x00}, Run{interpreter.get(), 1, 0x00}}) {
    SCOPED_TRACE(r.layer->TacticName() + " misalign " + std::to_string(r.misalign) + " fill " +
                 std::to_string(r.fill));
    const Tensor got = RunOnce(*r.layer, inputs, out_dims, dtype, r.misalign, r.fill);
    EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()), 0);
  }
  return want;
}

void ExpectClose(const Tensor& got, const Tensor& want, double rtol, double atol) {
  ASSERT_EQ(got.dims(), want.dims());
  const Tensor g = got.CastTo(DType::kFloat32), w = want.CastTo(DType::kFloat32);
  int64_t bad = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const float a = g.data<float>()[i], b = w.data<float>()[i];
    if (!(std::fabs(a - b) <= atol + rtol * std::fabs(b))) {
      if (++bad <= 5) ADD_FAILURE() << "element " << i << ": got " << a << ", want " << b;
    }
  }
  EXPECT_EQ(bad, 0);
}

ir::Value* GraphInput(ir::Graph& g, const std::string& name, DType dtype,
                      std::vector<int64_t> dims) {
  ir::Value* v = g.AddValue(name, {dtype, ir::ShapeFromDims(dims)});
  v->is_graph_input = true;
  g.inputs().push_back(v);
  return v;
}

ir::Value* AddOp(ir::Graph& g, const std::string& op, std::vector<ir::Value*> inputs,
                 const std::string& out) {
  ir::Value* v = g.AddValue(out);
  g.AddNode(op, out + "_node", std::move(inputs), {v});
  return v;
}

ir::Value* Constant(ir::Graph& g, const std::string& name, float v, DType d) {
  return g.AddConstant(g.UniqueName(name), Tensor::Scalar(v).CastTo(d));
}

using GraphBuilder = std::function<void(ir::Graph&, DType, int64_t)>;

// BERT's exact GELU: x * 0.5 * (1 + erf(x / sqrt 2)).
void BuildGelu(ir::Graph& g, DType d, int64_t n) {
  ir::Value* x = GraphInput(g, "x", d, {n});
  ir::Value* t = AddOp(g, "Div", {x, Constant(g, "sqrt2", 1.4142135f, d)}, "t");
  t = AddOp(g, "Erf", {t}, "erf");
  t = AddOp(g, "Add", {t, Constant(g, "one", 1.f, d)}, "plus1");
  t = AddOp(g, "Mul", {x, t}, "xmul");
  g.outputs().push_back(AddOp(g, "Mul", {t, Constant(g, "half", 0.5f, d)}, "y"));
}

// relu(x + s) * sigmoid(r) with s a broadcast scalar graph input.
void BuildScalarAddRelu(ir::Graph& g, DType d, int64_t n) {
  ir::Value* x = GraphInput(g, "x", d, {n});
  ir::Value* s = GraphInput(g, "s", d, {});
  ir::Value* r = GraphInput(g, "r", d, {n});
  ir::Value* t = AddOp(g, "Relu", {AddOp(g, "Add", {x, s}, "xs")}, "relu");
  g.outputs().push_back(AddOp(g, "Mul", {t, AddOp(g, "Sigmoid", {r}, "sig")}, "y"));
}

struct FusedCase {
  std::unique_ptr<ir::Graph> reference, fused;
  std::map<std::string, Tensor> feeds;
  std::vector<Tensor> inputs;  // The fused node's, in order.
  std::vector<bool> constant;
};

FusedCase MakeFusedCase(const GraphBuilder& build, DType dtype, int64_t n, uint32_t seed) {
  FusedCase c;
  for (auto* g : {&c.reference, &c.fused}) {
    *g = std::make_unique<ir::Graph>();
    (*g)->opset_version = 17;
    build(**g, dtype, n);
    passes::InferShapes(**g);
  }
  KILN_CHECK(builder::FuseElementwise(*c.fused) > 0 && c.fused->nodes().size() == 1,
             "test graph did not fuse into one node");
  for (const ir::Value* in : c.reference->inputs())
    c.feeds[in->name] = RandomTensor(ir::KnownDims(*in->type.shape), -3.f, 3.f, ++seed).CastTo(dtype);
  for (const ir::Value* v : c.fused->nodes()[0]->inputs) {
    c.inputs.push_back(v->is_constant() ? v->constant : c.feeds.at(v->name));
    c.constant.push_back(v->is_constant());
  }
  return c;
}

TEST(GpuElementwiseCodegenTest, MatchesInterpreterBitwiseAndCpu) {
  KILN_REQUIRE_GPU();
  KILN_REQUIRE_NVRTC();
  struct Tolerance {
    DType dtype;
    double rtol, atol;
  };
  for (const GraphBuilder& build : {GraphBuilder(BuildGelu), GraphBuilder(BuildScalarAddRelu)}) {
    for (const Tolerance& tol : {Tolerance{DType::kFloat32, 1e-5, 1e-6},
                                 Tolerance{DType::kFloat16, 1e-2, 1e-2},
                                 Tolerance{DType::kBFloat16, 3e-2, 3e-2}}) {
      for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
        SCOPED_TRACE(std::string(DTypeName(tol.dtype)) + " n=" + std::to_string(n));
        FusedCase c = MakeFusedCase(build, tol.dtype, n, 300);
        const ir::Node& node = *c.fused->nodes()[0];
        const Tensor got = ExpectCodegenMatchesInterpreter(node, c.inputs, c.constant, {n},
                                                           tol.dtype);
        const Tensor want = cpu::Executor(*c.reference).Run(c.feeds)[0];
        ExpectClose(got, want, tol.rtol, tol.atol);
      }
    }
  }
}

// A KilnElementwise node running `t` over inputs of the given dims.
ir::Node* AddProgramNode(ir::Graph& g, const TestProgram& t, DType dtype,
                         const std::vector<std::vector<int64_t>>& input_dims) {
  std::vector<ir::Value*> inputs;
  for (int k = 0; k < t.num_inputs; ++k)
    inputs.push_back(g.AddValue("x" + std::to_string(k),
                                {dtype, ir::ShapeFromDims(input_dims[static_cast<size_t>(k)])}));
  ir::Node* node = g.AddNode("KilnElementwise", t.name, inputs, {g.AddValue("y")});
  std::vector<int64_t> code;
  std::vector<float> params;
  for (const Instruction& in : t.code) {
    for (int v : {static_cast<int>(in.op), in.dst, in.a, in.b, in.c}) code.push_back(v);
    params.push_back(in.p0);
    params.push_back(in.p1);
  }
  node->attrs.set("program", code);
  node->attrs.set("params", params);
  node->attrs.set("immediates", t.immediates);
  node->attrs.set("output", int64_t{t.output});
  return node;
}

// ... over [n] inputs (those in `scalars` are single elements).
ir::Node* AddProgramNode(ir::Graph& g, const TestProgram& t, DType dtype, int64_t n,
                         const std::vector<int>& scalars) {
  std::vector<std::vector<int64_t>> dims(static_cast<size_t>(t.num_inputs), {n});
  for (int k : scalars) dims[static_cast<size_t>(k)] = {};
  return AddProgramNode(g, t, dtype, dims);
}

// Broadcasting inputs (strided indexing): rows, columns, BERT's embedding
// sum [b, s, h] + [1, s, h], both operands broadcast ([6,1] + [1,9]).
TEST(GpuElementwiseCodegenTest, BroadcastIndexingMatchesInterpreterBitwise) {
  KILN_REQUIRE_GPU();
  KILN_REQUIRE_NVRTC();
  struct Shapes {
    std::vector<int64_t> a, b, out;
  };
  const Shapes cases[] = {{{4, 33, 96}, {1, 33, 96}, {4, 33, 96}},
                          {{5, 7}, {7}, {5, 7}},
                          {{6, 1}, {1, 9}, {6, 9}},
                          {{2, 3, 5, 7}, {3, 1, 7}, {2, 3, 5, 7}}};
  for (const Shapes& sh : cases) {
    for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      SCOPED_TRACE(DimsToString(sh.a) + " + " + DimsToString(sh.b) + " " + DTypeName(dtype));
      ir::Graph g;
      const ir::Node* node = AddProgramNode(g, AddRelu(), dtype, {sh.a, sh.b});
      std::vector<Tensor> inputs = {RandomTensor(sh.a, -4.f, 4.f, 501).CastTo(dtype),
                                    RandomTensor(sh.b, -4.f, 4.f, 502).CastTo(dtype)};
      const Tensor got = ExpectCodegenMatchesInterpreter(*node, inputs, {}, sh.out, dtype);
      // And the value: relu(a + b) with numpy broadcasting, on the host.
      const Tensor a = inputs[0].CastTo(DType::kFloat32), b = inputs[1].CastTo(DType::kFloat32);
      const Tensor y = got.CastTo(DType::kFloat32);
      const std::vector<int64_t>& out = sh.out;
      std::vector<int64_t> idx(out.size(), 0);
      auto offset = [&](const std::vector<int64_t>& dims) {
        int64_t o = 0;
        const size_t shift = out.size() - dims.size();
        for (size_t d = 0; d < dims.size(); ++d) o = o * dims[d] + (dims[d] == 1 ? 0 : idx[d + shift]);
        return o;
      };
      for (int64_t i = 0; i < y.numel(); ++i) {
        int64_t r = i;
        for (size_t d = out.size(); d-- > 0;) {
          idx[d] = r % out[d];
          r /= out[d];
        }
        const float want = std::max(0.f, a.data<float>()[offset(sh.a)] + b.data<float>()[offset(sh.b)]);
        ASSERT_NEAR(y.data<float>()[i], want, dtype == DType::kFloat32 ? 1e-6 : 5e-2) << "element " << i;
      }
    }
  }
}

TEST(GpuElementwiseCodegenTest, EveryFusibleOpMatchesInterpreterBitwise) {
  KILN_REQUIRE_GPU();
  KILN_REQUIRE_NVRTC();
  for (const TestProgram& t : AllPrograms()) {
    std::vector<std::vector<int>> scalar_sets = {{}};
    if (t.num_inputs >= 2) scalar_sets.push_back({1});
    if (t.num_inputs >= 3) scalar_sets.push_back({0, 2});
    for (const std::vector<int>& scalars : scalar_sets) {
      for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
          SCOPED_TRACE(t.name + " " + DTypeName(dtype) + " n=" + std::to_string(n) +
                       " scalars " + std::to_string(scalars.size()));
          ir::Graph g;
          const ir::Node* node = AddProgramNode(g, t, dtype, n, scalars);
          std::vector<Tensor> inputs;
          for (const ir::Value* v : node->inputs)
            inputs.push_back(RandomTensor(ir::KnownDims(*v->type.shape), -4.f, 4.f,
                                          static_cast<uint32_t>(400 + inputs.size()))
                                 .CastTo(dtype));
          ExpectCodegenMatchesInterpreter(*node, inputs, {}, {n}, dtype);
        }
      }
    }
  }
}

TEST(GpuElementwiseCodegenTest, CudaGraphCaptureAndReplay) {
  KILN_REQUIRE_GPU();
  KILN_REQUIRE_NVRTC();
  const DType dtype = DType::kFloat16;
  const int64_t n = 1000003;
  FusedCase c = MakeFusedCase(BuildGelu, dtype, n, 500);
  const ir::Node& node = *c.fused->nodes()[0];
  ASSERT_EQ(c.inputs.size(), 1u);  // The constants became immediates.
  const auto layer = CreateLayer(node, c.inputs, c.constant, {n}, dtype, true);
  ASSERT_EQ(layer->TacticName(), "codegen");
  const auto interpreter = CreateLayer(node, c.inputs, c.constant, {n}, dtype, false);

  DeviceBuffer in(c.inputs[0].nbytes()), out(c.inputs[0].nbytes());
  gpu::LaunchArgs args;
  args.inputs = {in.ptr};
  args.outputs = {out.ptr};
  cudaStream_t stream = nullptr;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  args.stream = stream;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  layer->Enqueue(args);
  KILN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  KILN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  // Two replays over different inputs: each matches the interpreter.
  for (uint32_t seed : {600u, 601u}) {
    const Tensor x = RandomTensor({n}, -3.f, 3.f, seed).CastTo(dtype);
    KILN_CUDA_CHECK(cudaMemcpy(in.ptr, x.raw_data(), x.nbytes(), cudaMemcpyHostToDevice));
    KILN_CUDA_CHECK(cudaMemset(out.ptr, 0xFF, x.nbytes()));
    KILN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    Tensor got(dtype, {n});
    KILN_CUDA_CHECK(cudaMemcpy(got.raw_data(), out.ptr, got.nbytes(), cudaMemcpyDeviceToHost));
    const Tensor want = RunOnce(*interpreter, {x}, {n}, dtype, 0, 0x00);
    EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()), 0) << "seed " << seed;
  }
  KILN_CUDA_CHECK(cudaGraphExecDestroy(exec));
  KILN_CUDA_CHECK(cudaGraphDestroy(graph));
  KILN_CUDA_CHECK(cudaStreamDestroy(stream));
}

// Identical programs share one compiled kernel: the second layer is created
// without compiling (far faster than the first).
TEST(GpuElementwiseCodegenTest, IdenticalProgramsCompileOnce) {
  KILN_REQUIRE_GPU();
  KILN_REQUIRE_NVRTC();
  // A program no other test uses, so the first creation compiles.
  TestProgram t{"cache_probe", 1, {{Op::kMul, 1, 0, -1, 0}, {Op::kTanh, 1, 1, 0, 0}}, {1.0625f},
                1};
  ir::Graph g;
  const ir::Node* node = AddProgramNode(g, t, DType::kFloat32, 1000, {});
  const std::vector<Tensor> inputs = {RandomTensor({1000}, -1.f, 1.f, 700)};
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto first = CreateLayer(*node, inputs, {}, {1000}, DType::kFloat32, true);
  const auto t1 = Clock::now();
  for (int i = 0; i < 11; ++i)
    EXPECT_EQ(CreateLayer(*node, inputs, {}, {1000}, DType::kFloat32, true)->TacticName(),
              "codegen");
  const auto t2 = Clock::now();
  EXPECT_EQ(first->TacticName(), "codegen");
  const double compile_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  const double cached_ms = std::chrono::duration<double, std::milli>(t2 - t1).count() / 11;
  std::printf("first creation (NVRTC compile + load) %.1f ms, cached %.3f ms\n", compile_ms,
              cached_ms);
  EXPECT_LT(cached_ms * 10, compile_ms);
}

// Codegen vs interpreter timing (not a correctness test; run with
// --gtest_also_run_disabled_tests --gtest_filter='*CodegenBandwidth*').
TEST(GpuElementwiseCodegenTest, DISABLED_CodegenBandwidth) {
  KILN_REQUIRE_GPU();
  const int64_t n = int64_t{128} * 128 * 3072;  // BERT-base FFN activation, batch 128.
  for (DType dtype : {DType::kFloat16, DType::kFloat32}) {
    FusedCase c = MakeFusedCase(BuildGelu, dtype, n, 800);
    const ir::Node& node = *c.fused->nodes()[0];
    for (bool codegen : {false, true}) {
      const auto layer = CreateLayer(node, c.inputs, c.constant, {n}, dtype, codegen);
      DeviceBuffer in(c.inputs[0].nbytes()), out(c.inputs[0].nbytes());
      KILN_CUDA_CHECK(cudaMemset(in.ptr, 0, c.inputs[0].nbytes()));
      gpu::LaunchArgs args;
      args.inputs = {in.ptr};
      args.outputs = {out.ptr};
      const double per = testing::TimeEnqueueMs(*layer, args);
      std::printf("GELU %s %-11s %.3f ms  %.1f GB/s\n", DTypeName(dtype),
                  layer->TacticName().c_str(), per,
                  2.0 * static_cast<double>(c.inputs[0].nbytes()) / (per * 1e6));
    }
  }
}

}  // namespace
}  // namespace kiln
