// GPU layers of the elementwise family: unary math and activations, numpy-
// broadcast binary / variadic ops, comparisons and logic, Where, Clip, PRelu,
// Cast/CastLike, (De)QuantizeLinear, inference BatchNormalization and the
// fused KilnElementwise program (src/builder/fuse_elementwise.h).
//
// Every layer is one or a few launches of the kernels in
// cuda/kernels/elementwise.h (KilnElementwise: of a kernel generated for its
// program, cuda/kernels/elementwise_codegen.h, where possible; the layer's
// TacticName() says "codegen" or "interpreter"). Creation turns each
// operand into element strides along the output's physical dims: the
// operand's logical dims are right-aligned to the output's (numpy
// broadcasting; legacy and per-axis forms are first rewritten as such dims),
// each operand's strides follow its own layout (row-major, or NHWC for rank-4
// operands), and the output's physical order is N,H,W,C when it is NHWC. So
// every layer accepts NHWC.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/elementwise_codegen.h"
#include "cuda/layer.h"
#include "ops/registry.h"

namespace kiln::gpu {
namespace {

using ew::Op;

bool IsHalfOrFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}
bool IsFloatType(DType d) { return IsHalfOrFloat(d) || d == DType::kFloat64; }
bool IsSignedInt(DType d) {
  return d == DType::kInt8 || d == DType::kInt16 || d == DType::kInt32 || d == DType::kInt64;
}
bool IsStorable(DType d) { return d != DType::kUndefined && d != DType::kString && DTypeSize(d) > 0; }

ew::Compute ComputeFor(DType d) {
  switch (d) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16: return ew::Compute::kFloat32;
    case DType::kFloat64: return ew::Compute::kFloat64;
    case DType::kUInt64: return ew::Compute::kUInt64;
    default: return ew::Compute::kInt64;
  }
}

// ---- Operand strides ----

// Element strides of each logical dim of a tensor stored with `layout`.
std::vector<int64_t> LogicalStrides(const std::vector<int64_t>& dims, Layout layout) {
  if (layout == Layout::kRowMajor) return RowMajorStrides(dims);
  const std::vector<int64_t> p = RowMajorStrides({dims[0], dims[2], dims[3], dims[1]});
  return {p[0], p[3], p[1], p[2]};
}

// An operand as the broadcast sees it: logical dims (possibly rewritten from
// the stored dims, e.g. a per-axis vector as [C,1,1]) over the stored
// elements, which are laid out with `layout`.
struct Operand {
  std::vector<int64_t> dims;
  Layout layout = Layout::kRowMajor;
};

Operand OperandOf(const TensorDesc& d) { return Operand{d.dims, d.layout}; }
// A one-element operand (Clip bounds, per-tensor scales) whatever its rank.
Operand ScalarOperand() { return Operand{{}, Layout::kRowMajor}; }

ew::Indexing BuildIndexing(const LayerInit& init, const TensorDesc& out,
                           const std::vector<Operand>& operands) {
  const int rank = out.rank();
  KILN_LAYER_CHECK(init, rank <= ew::kMaxRank, "rank ", rank, " exceeds ", ew::kMaxRank);
  KILN_LAYER_CHECK(init, out.layout == Layout::kRowMajor || rank == 4,
                   "an NHWC output must have rank 4, got ", out.ToString());
  std::vector<int> perm(static_cast<size_t>(rank));
  for (int i = 0; i < rank; ++i) perm[static_cast<size_t>(i)] = i;
  if (out.layout == Layout::kNHWC) perm = {0, 2, 3, 1};
  std::vector<int64_t> phys_dims(static_cast<size_t>(rank));
  for (int p = 0; p < rank; ++p)
    phys_dims[static_cast<size_t>(p)] = out.dims[static_cast<size_t>(perm[static_cast<size_t>(p)])];
  std::vector<std::vector<int64_t>> strides;
  for (const Operand& op : operands) {
    const int r = static_cast<int>(op.dims.size());
    KILN_LAYER_CHECK(init, r <= rank, "operand ", DimsToString(op.dims),
                     " does not broadcast to the output ", out.ToString());
    KILN_LAYER_CHECK(init, op.layout == Layout::kRowMajor || r == 4,
                     "an NHWC operand must have rank 4, got ", DimsToString(op.dims));
    const std::vector<int64_t> ls = LogicalStrides(op.dims, op.layout);
    std::vector<int64_t> aligned(static_cast<size_t>(rank), 0);
    for (int a = rank - r; a < rank; ++a) {
      const size_t j = static_cast<size_t>(a - (rank - r));
      const int64_t od = out.dims[static_cast<size_t>(a)];
      KILN_LAYER_CHECK(init, op.dims[j] == od || op.dims[j] == 1, "operand ",
                       DimsToString(op.dims), " does not broadcast to the output ",
                       out.ToString());
      aligned[static_cast<size_t>(a)] = op.dims[j] == 1 ? 0 : ls[j];
    }
    std::vector<int64_t> phys(static_cast<size_t>(rank));
    for (int p = 0; p < rank; ++p)
      phys[static_cast<size_t>(p)] = aligned[static_cast<size_t>(perm[static_cast<size_t>(p)])];
    strides.push_back(std::move(phys));
  }
  return ew::MakeIndexing(phys_dims, strides);
}

// ---- The N-ary layer ----

// Inputs of one kernel launch: node inputs (>= 0), the layer's output
// (kOutput) or the workspace (kWorkspaceA: the accumulator of a chained
// variadic op or BatchNormalization's factors; kWorkspaceB: its shifts).
constexpr int kOutput = -1;
constexpr int kWorkspaceA = -2;
constexpr int kWorkspaceB = -3;

struct Step {
  ew::NaryParams params;
  ew::Indexing indexing;
  std::vector<int> sources;
  int dest = kOutput;  // kOutput or kWorkspaceA.
};

class NaryLayer : public Layer {
 public:
  NaryLayer(std::vector<Step> steps, int num_node_inputs, size_t workspace_bytes = 0)
      : steps_(std::move(steps)),
        reads_(static_cast<size_t>(num_node_inputs), false),
        workspace_bytes_(workspace_bytes) {
    for (const Step& s : steps_)
      for (int src : s.sources)
        if (src >= 0) reads_[static_cast<size_t>(src)] = true;
  }

  bool ReadsInputOnDevice(int input) const override {
    return input >= 0 && static_cast<size_t>(input) < reads_.size() &&
           reads_[static_cast<size_t>(input)];
  }
  int KernelLaunches() const override { return static_cast<int>(steps_.size()); }
  size_t WorkspaceBytes() const override { return workspace_bytes_; }

  void Enqueue(const LaunchArgs& args) const override {
    for (const Step& s : steps_) {
      ew::Pointers p;
      for (size_t k = 0; k < s.sources.size(); ++k) p.in[k] = Source(args, s.sources[k]);
      void* dest = s.dest == kOutput ? args.outputs[0] : args.workspace;
      ew::LaunchNary(s.params, s.indexing, p, dest, args.stream);
    }
  }

 protected:
  virtual const void* Source(const LaunchArgs& args, int src) const {
    if (src == kOutput) return args.outputs[0];
    if (src == kWorkspaceA) return args.workspace;
    return args.inputs[static_cast<size_t>(src)];
  }

  std::vector<Step> steps_;
  std::vector<bool> reads_;
  size_t workspace_bytes_;
};

// A copy (Cast to the same dtype and layout).
class CopyLayer : public Layer {
 public:
  explicit CopyLayer(size_t bytes) : bytes_(bytes) {}
  bool ReadsInputOnDevice(int input) const override { return input == 0; }
  void Enqueue(const LaunchArgs& args) const override {
    if (bytes_ == 0) return;
    KILN_CUDA_CHECK(cudaMemcpyAsync(args.outputs[0], args.inputs[0], bytes_,
                                    cudaMemcpyDeviceToDevice, args.stream));
  }
  int KernelLaunches() const override { return 1; }

 private:
  size_t bytes_;
};

void CheckOutput(const LayerInit& init) {
  KILN_LAYER_CHECK(init, !init.outputs.empty() && init.outputs[0].defined(),
                   "the output is missing");
  KILN_LAYER_CHECK(init, IsStorable(init.outputs[0].dtype), "unsupported output dtype ",
                   DTypeName(init.outputs[0].dtype));
  for (size_t i = 1; i < init.outputs.size(); ++i)
    KILN_LAYER_CHECK(init, !init.outputs[i].defined(), "only one output is supported");
}

void CheckInput(const LayerInit& init, int i) {
  KILN_LAYER_CHECK(init, i < static_cast<int>(init.inputs.size()) &&
                             init.inputs[static_cast<size_t>(i)].defined(),
                   "input ", i, " is missing");
  KILN_LAYER_CHECK(init, IsStorable(init.inputs[static_cast<size_t>(i)].dtype),
                   "unsupported dtype ", DTypeName(init.inputs[static_cast<size_t>(i)].dtype),
                   " of input ", i);
}

const TensorDesc& In(const LayerInit& init, int i) { return init.inputs[static_cast<size_t>(i)]; }

// One launch over node inputs `sources` (operands given explicitly).
Step MakeStep(const LayerInit& init, Op op, ew::Compute compute, const std::vector<int>& sources,
              const std::vector<Operand>& operands, double p0 = 0, double p1 = 0) {
  Step s;
  s.params.op = op;
  s.params.compute = compute;
  s.params.out_dtype = init.outputs[0].dtype;
  s.params.p0 = p0;
  s.params.p1 = p1;
  for (size_t k = 0; k < sources.size(); ++k)
    s.params.in_dtypes[k] = sources[k] >= 0 ? In(init, sources[k]).dtype : init.outputs[0].dtype;
  s.indexing = BuildIndexing(init, init.outputs[0], operands);
  s.sources = sources;
  return s;
}

std::unique_ptr<Layer> Single(const LayerInit& init, Step step) {
  std::vector<Step> steps;
  steps.push_back(std::move(step));
  return std::make_unique<NaryLayer>(std::move(steps), static_cast<int>(init.inputs.size()));
}

// ---- Unary ops ----

enum class Accepts { kFloat, kSignedNumeric, kNumeric, kBool, kInteger };

bool AcceptsType(Accepts a, DType d) {
  switch (a) {
    case Accepts::kFloat: return IsFloatType(d);
    case Accepts::kSignedNumeric: return IsFloatType(d) || IsSignedInt(d);
    case Accepts::kNumeric: return IsFloatType(d) || IsInteger(d);
    case Accepts::kBool: return d == DType::kBool;
    case Accepts::kInteger: return IsInteger(d);
  }
  return false;
}

void CheckAccepts(const LayerInit& init, int i, Accepts a) {
  CheckInput(init, i);
  KILN_LAYER_CHECK(init, AcceptsType(a, In(init, i).dtype), "input ", i, " has unsupported dtype ",
                   DTypeName(In(init, i).dtype));
}

struct UnaryChoice {
  Op op;
  double p0 = 0, p1 = 0;
};

// Creates a unary layer; `choose` maps the node's attributes to the op.
LayerFactory UnaryFactory(Accepts accepts, std::function<UnaryChoice(const LayerInit&)> choose) {
  return [accepts, choose](const LayerInit& init) -> std::unique_ptr<Layer> {
    CheckOutput(init);
    CheckAccepts(init, 0, accepts);
    const UnaryChoice c = choose(init);
    return Single(init, MakeStep(init, c.op, ComputeFor(In(init, 0).dtype), {0},
                                 {OperandOf(In(init, 0))}, c.p0, c.p1));
  };
}

LayerFactory SimpleUnary(Accepts accepts, Op op) {
  return UnaryFactory(accepts, [op](const LayerInit&) { return UnaryChoice{op}; });
}

// A unary op with one float attribute.
LayerFactory AlphaUnary(Op op, const char* name, float def) {
  return UnaryFactory(Accepts::kFloat, [op, name, def](const LayerInit& init) {
    return UnaryChoice{op, init.node.attrs.GetFloat(name, def)};
  });
}

std::unique_ptr<Layer> CreateClip(const LayerInit& init) {
  CheckOutput(init);
  CheckAccepts(init, 0, Accepts::kNumeric);
  const DType d = In(init, 0).dtype;
  const ew::Compute compute = ComputeFor(d);
  if (init.node.opset < 11) {
    const ir::Attributes& attrs = init.node.attrs;
    KILN_LAYER_CHECK(init, IsFloatType(d), "Clip-", init.node.opset,
                     " with attributes needs a floating-point input, got ", DTypeName(d));
    const double inf = std::numeric_limits<double>::infinity();
    const double lo = attrs.has("min") ? attrs.GetFloat("min") : -inf;
    const double hi = attrs.has("max") ? attrs.GetFloat("max") : inf;
    return Single(init, MakeStep(init, Op::kClipConst, compute, {0}, {OperandOf(In(init, 0))}, lo, hi));
  }
  std::vector<int> sources = {0};
  std::vector<Operand> operands = {OperandOf(In(init, 0))};
  const bool has_lo = init.inputs.size() > 1 && In(init, 1).defined();
  const bool has_hi = init.inputs.size() > 2 && In(init, 2).defined();
  for (int i = 1; i <= 2; ++i) {
    if (!(i == 1 ? has_lo : has_hi)) continue;
    KILN_LAYER_CHECK(init, In(init, i).dtype == d, "Clip bound ", i, " has dtype ",
                     DTypeName(In(init, i).dtype), " but the input is ", DTypeName(d));
    KILN_LAYER_CHECK(init, In(init, i).numel() == 1, "Clip ", i == 1 ? "min" : "max",
                     " must be a scalar, got ", In(init, i).ToString());
    sources.push_back(i);
    operands.push_back(ScalarOperand());
  }
  Op op = Op::kIdentity;
  if (has_lo && has_hi) op = Op::kClip;
  else if (has_lo) op = Op::kClipLow;
  else if (has_hi) op = Op::kClipHigh;
  return Single(init, MakeStep(init, op, compute, sources, operands));
}

// ---- Binary / variadic ----

// Input i's logical dims as the binary op sees them (legacy broadcast of B
// before opset 7, as the CPU backend's OperandDims).
Operand BinaryOperand(const LayerInit& init, int i) {
  const TensorDesc& d = In(init, i);
  if (i != 1 || init.node.opset >= 7 || init.node.attrs.GetInt("broadcast", 0) == 0)
    return OperandOf(d);
  const int64_t a_rank = In(init, 0).rank();
  const int64_t b_rank = d.rank();
  const int64_t axis = init.node.attrs.GetInt("axis", a_rank - b_rank);
  KILN_LAYER_CHECK(init, axis >= 0 && axis + b_rank <= a_rank, "legacy broadcast of B ",
                   DimsToString(d.dims), " into A ", DimsToString(In(init, 0).dims), " at axis ",
                   axis, " does not fit");
  KILN_LAYER_CHECK(init, d.layout == Layout::kRowMajor || a_rank == b_rank,
                   "legacy broadcast of an NHWC operand is not supported");
  if (d.layout != Layout::kRowMajor) return OperandOf(d);
  std::vector<int64_t> padded(static_cast<size_t>(a_rank), 1);
  std::copy(d.dims.begin(), d.dims.end(), padded.begin() + axis);
  return Operand{padded, Layout::kRowMajor};
}

LayerFactory BinaryFactory(Accepts accepts, Op op) {
  return [accepts, op](const LayerInit& init) -> std::unique_ptr<Layer> {
    CheckOutput(init);
    KILN_LAYER_CHECK(init, init.inputs.size() == 2, "takes 2 inputs, got ", init.inputs.size());
    CheckAccepts(init, 0, accepts);
    CheckAccepts(init, 1, accepts);
    KILN_LAYER_CHECK(init, In(init, 0).dtype == In(init, 1).dtype, "inputs have dtypes ",
                     DTypeName(In(init, 0).dtype), " and ", DTypeName(In(init, 1).dtype));
    return Single(init, MakeStep(init, op, ComputeFor(In(init, 0).dtype), {0, 1},
                                 {BinaryOperand(init, 0), BinaryOperand(init, 1)}));
  };
}

std::unique_ptr<Layer> CreateMod(const LayerInit& init) {
  CheckOutput(init);
  const bool fmod = init.node.attrs.GetInt("fmod", 0) != 0;
  const DType d = init.inputs.empty() ? DType::kUndefined : In(init, 0).dtype;
  KILN_LAYER_CHECK(init, !IsFloatType(d) || fmod,
                   "Mod of floating-point inputs requires fmod=1");
  return BinaryFactory(Accepts::kNumeric, fmod ? Op::kFmod : Op::kMod)(init);
}

std::unique_ptr<Layer> CreatePow(const LayerInit& init) {
  CheckOutput(init);
  KILN_LAYER_CHECK(init, init.inputs.size() == 2, "takes 2 inputs, got ", init.inputs.size());
  CheckAccepts(init, 0, Accepts::kNumeric);
  CheckAccepts(init, 1, Accepts::kNumeric);
  const DType base = In(init, 0).dtype;
  const DType exponent = In(init, 1).dtype;
  ew::Compute compute = ComputeFor(base);
  if (!IsFloatType(base) && IsFloatType(exponent)) {
    // Integer base, float exponent: pow in double, truncated to the base's type.
    compute = ew::Compute::kFloat64;
  }
  Step s = MakeStep(init, Op::kPow, compute, {0, 1},
                    {BinaryOperand(init, 0), BinaryOperand(init, 1)});
  if (!IsFloatType(base) && !IsFloatType(exponent) && exponent != base)
    s.params.wrap_input1 = base;  // The CPU backend casts the exponent to the base's type.
  return Single(init, std::move(s));
}

std::unique_ptr<Layer> CreatePRelu(const LayerInit& init) {
  CheckOutput(init);
  CheckAccepts(init, 0, Accepts::kNumeric);
  CheckAccepts(init, 1, Accepts::kNumeric);
  const TensorDesc& x = In(init, 0);
  const TensorDesc& slope = In(init, 1);
  KILN_LAYER_CHECK(init, x.dtype == slope.dtype, "slope dtype ", DTypeName(slope.dtype),
                   " differs from X's ", DTypeName(x.dtype));
  Operand slope_op = OperandOf(slope);
  // Before opset 7 a 1-D slope applied per channel (axis 1).
  if (init.node.opset < 7 && slope.rank() == 1 && slope.numel() != 1 && x.rank() >= 2) {
    slope_op.dims.assign(static_cast<size_t>(x.rank() - 1), 1);
    slope_op.dims[0] = slope.numel();
  }
  return Single(init, MakeStep(init, Op::kPRelu, ComputeFor(x.dtype), {0, 1},
                               {OperandOf(x), slope_op}));
}

// The dtype a chained variadic op accumulates in between launches (the
// compute type, so chaining rounds nothing the CPU backend does not).
DType AccumulatorDType(ew::Compute compute) {
  switch (compute) {
    case ew::Compute::kFloat32: return DType::kFloat32;
    case ew::Compute::kFloat64: return DType::kFloat64;
    case ew::Compute::kInt64: return DType::kInt64;
    case ew::Compute::kUInt64: return DType::kUInt64;
  }
  return DType::kFloat32;
}

// Sum / Max / Min / Mean: folded left to right, at most kMaxInputs per
// launch; with more inputs, launches before the last accumulate in the
// workspace (in the compute type) and the next launch continues from it.
LayerFactory VariadicFactory(Accepts accepts, Op op, bool mean) {
  return [accepts, op, mean](const LayerInit& init) -> std::unique_ptr<Layer> {
    CheckOutput(init);
    const int n = static_cast<int>(init.inputs.size());
    KILN_LAYER_CHECK(init, n >= 1, "needs at least one input");
    for (int i = 0; i < n; ++i) {
      CheckAccepts(init, i, accepts);
      KILN_LAYER_CHECK(init, In(init, i).dtype == In(init, 0).dtype, "input ", i, " has dtype ",
                       DTypeName(In(init, i).dtype), " but input 0 has ",
                       DTypeName(In(init, 0).dtype));
    }
    const ew::Compute compute = ComputeFor(In(init, 0).dtype);
    const DType acc = AccumulatorDType(compute);
    std::vector<Step> steps;
    int next = 0;
    while (next < n) {
      std::vector<int> sources;
      std::vector<Operand> operands;
      if (next > 0) {
        sources.push_back(kWorkspaceA);
        operands.push_back(OperandOf(init.outputs[0]));
      }
      while (next < n && static_cast<int>(sources.size()) < ew::kMaxInputs) {
        sources.push_back(next);
        operands.push_back(OperandOf(In(init, next)));
        ++next;
      }
      Step s = MakeStep(init, op, compute, sources, operands);
      if (sources[0] == kWorkspaceA) s.params.in_dtypes[0] = acc;
      if (next < n) {
        s.dest = kWorkspaceA;
        s.params.out_dtype = acc;
      }
      if (mean && next == n) s.params.mean_count = n;
      steps.push_back(std::move(s));
    }
    const size_t workspace =
        steps.size() > 1 ? static_cast<size_t>(init.outputs[0].numel()) * DTypeSize(acc) : 0;
    return std::make_unique<NaryLayer>(std::move(steps), n, workspace);
  };
}

std::unique_ptr<Layer> CreateWhere(const LayerInit& init) {
  CheckOutput(init);
  KILN_LAYER_CHECK(init, init.inputs.size() == 3, "takes 3 inputs");
  CheckAccepts(init, 0, Accepts::kBool);
  CheckInput(init, 1);
  CheckInput(init, 2);
  const DType d = In(init, 1).dtype;
  KILN_LAYER_CHECK(init, In(init, 2).dtype == d, "X and Y dtypes differ");
  return Single(init, MakeStep(init, Op::kWhere, ComputeFor(d), {0, 1, 2},
                               {OperandOf(In(init, 0)), OperandOf(In(init, 1)),
                                OperandOf(In(init, 2))}));
}

// ---- Cast ----

std::unique_ptr<Layer> CreateCast(const LayerInit& init) {
  CheckOutput(init);
  CheckInput(init, 0);
  const TensorDesc& x = In(init, 0);
  const TensorDesc& y = init.outputs[0];
  if (x.dtype == y.dtype && x.layout == y.layout && x.dims == y.dims)
    return std::make_unique<CopyLayer>(y.nbytes());
  // Floats widen exactly to float32 (float64 to double); signed integers and
  // bool to int64, uint64 stays unsigned: the CPU backend's widening.
  return Single(init, MakeStep(init, Op::kIdentity, ComputeFor(x.dtype), {0}, {OperandOf(x)}));
}

// ---- Quantization ----

// The scale / zero point operand: one element, or a vector along `axis`.
Operand QuantParamOperand(const LayerInit& init, const TensorDesc& x, const TensorDesc& scale) {
  if (scale.numel() == 1 && scale.rank() <= 1) return ScalarOperand();
  KILN_LAYER_CHECK(init, scale.rank() == 1, "scale must be a scalar or 1-D, got ",
                   scale.ToString());
  const int axis = NormalizeAxis(init.node.attrs.GetInt("axis", 1), x.rank(), init.node);
  KILN_LAYER_CHECK(init, scale.numel() == x.dims[static_cast<size_t>(axis)], "per-axis scale ",
                   scale.ToString(), " does not match X ", x.ToString(), " along axis ", axis);
  std::vector<int64_t> dims(static_cast<size_t>(x.rank() - axis), 1);
  dims[0] = scale.numel();
  return Operand{dims, Layout::kRowMajor};
}

void CheckZeroPoint(const LayerInit& init, bool has_zp) {
  if (!has_zp) return;
  KILN_LAYER_CHECK(init, In(init, 2).numel() == In(init, 1).numel(), "zero point ",
                   In(init, 2).ToString(), " and scale ", In(init, 1).ToString(),
                   " must have the same number of elements");
}

bool IsQuantType(DType d) {
  return d == DType::kInt8 || d == DType::kUInt8 || d == DType::kInt16 || d == DType::kUInt16;
}

std::unique_ptr<Layer> CreateQuantizeLinear(const LayerInit& init) {
  CheckOutput(init);
  CheckAccepts(init, 0, Accepts::kFloat);
  CheckAccepts(init, 1, Accepts::kFloat);
  const DType q = init.outputs[0].dtype;
  KILN_LAYER_CHECK(init, IsQuantType(q), "QuantizeLinear to ", DTypeName(q), " is not supported");
  const bool has_zp = init.inputs.size() > 2 && In(init, 2).defined();
  CheckZeroPoint(init, has_zp);
  KILN_LAYER_CHECK(init, !has_zp || In(init, 2).dtype == q, "zero point dtype differs from output");
  const TensorDesc& x = In(init, 0);
  const Operand param = QuantParamOperand(init, x, In(init, 1));
  double lo = 0, hi = 0;
  switch (q) {
    case DType::kInt8: lo = -128; hi = 127; break;
    case DType::kUInt8: lo = 0; hi = 255; break;
    case DType::kInt16: lo = -32768; hi = 32767; break;
    default: lo = 0; hi = 65535; break;
  }
  std::vector<int> sources = {0, 1};
  std::vector<Operand> operands = {OperandOf(x), param};
  if (has_zp) {
    sources.push_back(2);
    operands.push_back(param);
  }
  return Single(init, MakeStep(init, Op::kQuantize, ew::Compute::kFloat32, sources, operands, lo, hi));
}

std::unique_ptr<Layer> CreateDequantizeLinear(const LayerInit& init) {
  CheckOutput(init);
  CheckInput(init, 0);
  const DType xd = In(init, 0).dtype;
  KILN_LAYER_CHECK(init, IsQuantType(xd) || xd == DType::kInt32, "DequantizeLinear of ",
                   DTypeName(xd), " is not supported");
  CheckAccepts(init, 1, Accepts::kFloat);
  KILN_LAYER_CHECK(init, IsHalfOrFloat(init.outputs[0].dtype), "DequantizeLinear to ",
                   DTypeName(init.outputs[0].dtype), " is not supported");
  const bool has_zp = init.inputs.size() > 2 && In(init, 2).defined();
  CheckZeroPoint(init, has_zp);
  KILN_LAYER_CHECK(init, !has_zp || In(init, 2).dtype == xd, "zero point dtype differs from X");
  const TensorDesc& x = In(init, 0);
  const Operand param = QuantParamOperand(init, x, In(init, 1));
  std::vector<int> sources = {0, 1};
  std::vector<Operand> operands = {OperandOf(x), param};
  if (has_zp) {
    sources.push_back(2);
    operands.push_back(param);
  }
  return Single(init, MakeStep(init, Op::kDequantize, ew::Compute::kFloat32, sources, operands));
}

// ---- BatchNormalization (inference) ----

// y = x * factor + shift; factor/shift are computed on the device from the
// four parameter inputs into the workspace (one small launch), exactly as
// the CPU backend computes them.
class BatchNormLayer : public NaryLayer {
 public:
  BatchNormLayer(std::vector<Step> steps, int num_inputs, DType param_dtype, ew::Compute compute,
                 int64_t count, double epsilon)
      : NaryLayer(std::move(steps), num_inputs),
        param_dtype_(param_dtype),
        compute_(compute),
        count_(count),
        epsilon_(epsilon) {
    for (int i = 1; i <= 4; ++i) reads_[static_cast<size_t>(i)] = true;
  }

  size_t WorkspaceBytes() const override { return 2 * HalfBytes(); }
  int KernelLaunches() const override { return 2; }

  void Enqueue(const LaunchArgs& args) const override {
    char* ws = static_cast<char*>(args.workspace);
    ew::LaunchBatchNormPrepare(param_dtype_, compute_, count_, epsilon_, args.inputs[1],
                               args.inputs[2], args.inputs[3], args.inputs[4], ws,
                               ws + HalfBytes(), args.stream);
    NaryLayer::Enqueue(args);
  }

 protected:
  const void* Source(const LaunchArgs& args, int src) const override {
    const char* ws = static_cast<const char*>(args.workspace);
    if (src == kWorkspaceA) return ws;
    if (src == kWorkspaceB) return ws + HalfBytes();
    return NaryLayer::Source(args, src);
  }

 private:
  size_t HalfBytes() const {
    const size_t elem = compute_ == ew::Compute::kFloat64 ? 8 : 4;
    return (static_cast<size_t>(count_) * elem + 255) / 256 * 256;
  }

  DType param_dtype_;
  ew::Compute compute_;
  int64_t count_;
  double epsilon_;
};

std::unique_ptr<Layer> CreateBatchNorm(const LayerInit& init) {
  CheckOutput(init);
  CheckAccepts(init, 0, Accepts::kFloat);
  const TensorDesc& x = In(init, 0);
  KILN_LAYER_CHECK(init, init.node.attrs.GetInt("training_mode", 0) == 0,
                   "training_mode=1 is not supported");
  KILN_LAYER_CHECK(init, x.rank() >= 2, "input must have rank >= 2, got ", x.ToString());
  KILN_LAYER_CHECK(init, init.inputs.size() >= 5, "needs 5 inputs");
  const DType pd = In(init, 1).dtype;
  for (int i = 1; i <= 4; ++i) {
    CheckAccepts(init, i, Accepts::kFloat);
    KILN_LAYER_CHECK(init, In(init, i).dtype == pd, "parameter ", i, " has dtype ",
                     DTypeName(In(init, i).dtype), " but scale has ", DTypeName(pd));
  }
  KILN_LAYER_CHECK(init, IsFloatType(x.dtype) && (pd == x.dtype || (IsHalfOrFloat(pd) && IsHalfOrFloat(x.dtype))),
                   "parameters of dtype ", DTypeName(pd), " with X of dtype ", DTypeName(x.dtype),
                   " are not supported");
  const int64_t channels = x.dims[1];
  const int64_t volume = Product(x.dims, 2);
  const int64_t params = In(init, 1).numel();
  KILN_LAYER_CHECK(init, params == channels || params == channels * volume, "scale has ", params,
                   " entries; expected ", channels, " (one per channel)");
  for (int i = 2; i <= 4; ++i)
    KILN_LAYER_CHECK(init, In(init, i).numel() == params, "input ", i, " has ",
                     In(init, i).numel(), " entries but scale has ", params);
  Operand param;
  if (params == channels) {
    param.dims.assign(static_cast<size_t>(x.rank() - 1), 1);
    param.dims[0] = channels;
  } else {
    param.dims.assign(x.dims.begin() + 1, x.dims.end());
  }
  const ew::Compute compute = ComputeFor(x.dtype);
  const DType ws_dtype = compute == ew::Compute::kFloat64 ? DType::kFloat64 : DType::kFloat32;
  Step s = MakeStep(init, Op::kMulAdd, compute, {0}, {OperandOf(x), param, param});
  s.sources = {0, kWorkspaceA, kWorkspaceB};
  s.params.in_dtypes[1] = ws_dtype;
  s.params.in_dtypes[2] = ws_dtype;
  std::vector<Step> steps;
  steps.push_back(std::move(s));
  const double epsilon = init.node.attrs.GetFloat("epsilon", 1e-5f);
  return std::make_unique<BatchNormLayer>(std::move(steps), static_cast<int>(init.inputs.size()),
                                          pd, compute, params, epsilon);
}

// ---- KilnElementwise ----

// Runs the program as a generated straight-line kernel (elementwise_codegen.h)
// where one could be compiled at creation, else in the interpreter.
class FusedLayer : public Layer {
 public:
  FusedLayer(std::string name, DType dtype, ew::Program program, ew::Indexing indexing,
             int num_inputs, std::shared_ptr<const ew::FusedCodegenKernel> codegen)
      : name_(std::move(name)),
        dtype_(dtype),
        program_(program),
        indexing_(indexing),
        num_inputs_(num_inputs),
        codegen_(std::move(codegen)) {}

  std::string TacticName() const override { return codegen_ ? "codegen" : "interpreter"; }

  void Enqueue(const LaunchArgs& args) const override {
    ew::Pointers p;
    for (int k = 0; k < num_inputs_; ++k) p.in[k] = args.inputs[static_cast<size_t>(k)];
    try {
      if (codegen_) {
        codegen_->Launch(indexing_, p, args.outputs[0], args.stream);
      } else {
        ew::LaunchFused(dtype_, program_, indexing_, p, args.outputs[0], args.stream);
      }
    } catch (const Error& e) {
      Fail(name_, " on GPU (", TacticName(), "): ", e.what());
    }
  }

 private:
  std::string name_;
  DType dtype_;
  ew::Program program_;
  ew::Indexing indexing_;
  int num_inputs_;
  std::shared_ptr<const ew::FusedCodegenKernel> codegen_;  // nullptr: the interpreter.
};

// Says once per distinct reason on stderr why fused programs run in the
// interpreter instead of generated kernels.
void NoteInterpreterFallback(const std::string& reason) {
  static std::mutex mutex;
  static auto* reported = new std::set<std::string>;
  std::lock_guard<std::mutex> lock(mutex);
  if (!reported->insert(reason).second) return;
  std::fprintf(stderr, "kiln: KilnElementwise runs in the interpreter: %s\n", reason.c_str());
}

// The generated kernel for this program, or nullptr (interpreter) when code
// generation is off, unavailable, not applicable or fails.
std::shared_ptr<const ew::FusedCodegenKernel> TryCodegen(const LayerInit& init, DType dtype,
                                                         const ew::Program& program,
                                                         const ew::Indexing& indexing) {
  if (!ew::CodegenSupports(indexing)) return nullptr;  // By design: no message.
  const std::string unavailable = ew::CodegenUnavailableReason();
  if (!unavailable.empty()) {
    NoteInterpreterFallback(unavailable);
    return nullptr;
  }
  try {
    return ew::GetFusedCodegenKernel(dtype, program, indexing);
  } catch (const Error& e) {
    NoteInterpreterFallback("code generation failed for " + init.node.Describe() + ": " +
                            e.what());
    return nullptr;
  }
}

std::unique_ptr<Layer> CreateFused(const LayerInit& init) {
  CheckOutput(init);
  const DType dtype = init.outputs[0].dtype;
  KILN_LAYER_CHECK(init, IsHalfOrFloat(dtype), "KilnElementwise output dtype ", DTypeName(dtype),
                   " is not supported (float32, float16, bfloat16)");
  const int n = static_cast<int>(init.inputs.size());
  KILN_LAYER_CHECK(init, n >= 1 && n <= ew::kMaxInputs, "KilnElementwise takes 1 to ",
                   ew::kMaxInputs, " inputs, got ", n);
  std::vector<Operand> operands;
  for (int i = 0; i < n; ++i) {
    CheckInput(init, i);
    KILN_LAYER_CHECK(init, In(init, i).dtype == dtype, "input ", i, " has dtype ",
                     DTypeName(In(init, i).dtype), " but the output is ", DTypeName(dtype));
    operands.push_back(OperandOf(In(init, i)));
  }
  const ir::Attributes& attrs = init.node.attrs;
  const std::vector<int64_t> code = attrs.GetInts("program");
  const std::vector<float> params = attrs.GetFloats("params", {});
  const std::vector<float> imms = attrs.GetFloats("immediates", {});
  KILN_LAYER_CHECK(init, code.size() % 5 == 0, "program must hold 5 ints per instruction, got ",
                   code.size());
  const int count = static_cast<int>(code.size() / 5);
  KILN_LAYER_CHECK(init, count >= 1 && count <= ew::kMaxInstructions, "program has ", count,
                   " instructions (1 to ", ew::kMaxInstructions, ")");
  KILN_LAYER_CHECK(init, params.empty() || params.size() == 2 * code.size() / 5,
                   "params must hold 2 floats per instruction");
  KILN_LAYER_CHECK(init, imms.size() <= static_cast<size_t>(ew::kMaxImmediates), "at most ",
                   ew::kMaxImmediates, " immediates");
  ew::Program prog;
  prog.num_instructions = count;
  for (size_t i = 0; i < imms.size(); ++i) prog.imm[i] = imms[i];
  uint32_t defined = (1u << n) - 1u;
  auto check_operand = [&](int64_t v, bool used) {
    if (!used) return;
    if (v >= 0) {
      KILN_LAYER_CHECK(init, v < ew::kMaxRegisters && (defined >> v & 1u),
                       "program reads undefined register ", v);
    } else {
      KILN_LAYER_CHECK(init, -1 - v < static_cast<int64_t>(imms.size()),
                       "program reads missing immediate ", -1 - v);
    }
  };
  for (int i = 0; i < count; ++i) {
    const int64_t* ins = &code[static_cast<size_t>(i) * 5];
    const Op op = static_cast<Op>(ins[0]);
    KILN_LAYER_CHECK(init, ew::IsFusibleOp(op), "program op ", ins[0], " is not supported");
    const int arity = ew::IsUnaryOp(op) ? 1 : ew::IsBinaryOp(op) ? 2 : 3;
    check_operand(ins[2], true);
    check_operand(ins[3], arity >= 2);
    check_operand(ins[4], arity >= 3);
    KILN_LAYER_CHECK(init, ins[1] >= 0 && ins[1] < ew::kMaxRegisters,
                     "program writes invalid register ", ins[1]);
    defined |= 1u << ins[1];
    prog.op[i] = static_cast<int32_t>(ins[0]);
    prog.dst[i] = static_cast<int8_t>(ins[1]);
    prog.a[i] = static_cast<int8_t>(ins[2]);
    prog.b[i] = static_cast<int8_t>(arity >= 2 ? ins[3] : 0);
    prog.c[i] = static_cast<int8_t>(arity >= 3 ? ins[4] : 0);
    if (!params.empty()) {
      prog.p0[i] = params[static_cast<size_t>(2 * i)];
      prog.p1[i] = params[static_cast<size_t>(2 * i + 1)];
    }
  }
  const int64_t out_reg = attrs.GetInt("output");
  KILN_LAYER_CHECK(init, out_reg >= 0 && out_reg < ew::kMaxRegisters && (defined >> out_reg & 1u),
                   "program output register ", out_reg, " is never written");
  prog.output = static_cast<int>(out_reg);
  const ew::Indexing indexing = BuildIndexing(init, init.outputs[0], operands);
  std::shared_ptr<const ew::FusedCodegenKernel> codegen = TryCodegen(init, dtype, prog, indexing);
  return std::make_unique<FusedLayer>(init.node.Describe(), dtype, prog, indexing, n,
                                      std::move(codegen));
}

void Add(GpuLayerRegistry& registry, const char* op, LayerFactory create) {
  GpuOpDef def;
  def.op_type = op;
  def.create = std::move(create);
  def.accepts_nhwc = true;
  registry.Register(std::move(def));
}

}  // namespace

void RegisterElementwiseGpuLayers(GpuLayerRegistry& registry) {
  // Float unary math.
  const std::pair<const char*, Op> float_unary[] = {
      {"Sigmoid", Op::kSigmoid}, {"Tanh", Op::kTanh},       {"Exp", Op::kExp},
      {"Log", Op::kLog},         {"Sqrt", Op::kSqrt},       {"Reciprocal", Op::kReciprocal},
      {"Floor", Op::kFloor},     {"Ceil", Op::kCeil},       {"Round", Op::kRound},
      {"Erf", Op::kErf},         {"Sin", Op::kSin},         {"Cos", Op::kCos},
      {"Softplus", Op::kSoftplus}, {"Softsign", Op::kSoftsign}, {"Mish", Op::kMish},
      {"HardSwish", Op::kHardSwish}};
  for (const auto& [name, op] : float_unary) Add(registry, name, SimpleUnary(Accepts::kFloat, op));
  Add(registry, "LeakyRelu", AlphaUnary(Op::kLeakyRelu, "alpha", 0.01f));
  Add(registry, "Elu", AlphaUnary(Op::kElu, "alpha", 1.f));
  Add(registry, "ThresholdedRelu", AlphaUnary(Op::kThresholdedRelu, "alpha", 1.f));
  Add(registry, "Celu", UnaryFactory(Accepts::kFloat, [](const LayerInit& init) {
        const float alpha = init.node.attrs.GetFloat("alpha", 1.f);
        KILN_LAYER_CHECK(init, alpha != 0.f, "Celu alpha must not be 0");
        return UnaryChoice{Op::kCelu, alpha};
      }));
  Add(registry, "Selu", UnaryFactory(Accepts::kFloat, [](const LayerInit& init) {
        return UnaryChoice{Op::kSelu, init.node.attrs.GetFloat("alpha", 1.67326319217681884765625f),
                           init.node.attrs.GetFloat("gamma", 1.05070102214813232421875f)};
      }));
  Add(registry, "HardSigmoid", UnaryFactory(Accepts::kFloat, [](const LayerInit& init) {
        return UnaryChoice{Op::kHardSigmoid, init.node.attrs.GetFloat("alpha", 0.2f),
                           init.node.attrs.GetFloat("beta", 0.5f)};
      }));
  Add(registry, "Gelu", UnaryFactory(Accepts::kFloat, [](const LayerInit& init) {
        const std::string approximate = init.node.attrs.GetString("approximate", "none");
        KILN_LAYER_CHECK(init, approximate == "none" || approximate == "tanh",
                         "Gelu approximate must be \"none\" or \"tanh\", got \"", approximate, "\"");
        return UnaryChoice{approximate == "tanh" ? Op::kGeluTanh : Op::kGeluErf};
      }));
  Add(registry, "IsNaN", SimpleUnary(Accepts::kFloat, Op::kIsNaN));
  Add(registry, "IsInf", UnaryFactory(Accepts::kFloat, [](const LayerInit& init) {
        return UnaryChoice{Op::kIsInf,
                           init.node.attrs.GetInt("detect_positive", 1) != 0 ? 1.0 : 0.0,
                           init.node.attrs.GetInt("detect_negative", 1) != 0 ? 1.0 : 0.0};
      }));

  // Unary ops over integers too.
  Add(registry, "Relu", SimpleUnary(Accepts::kSignedNumeric, Op::kRelu));
  Add(registry, "Neg", SimpleUnary(Accepts::kSignedNumeric, Op::kNeg));
  Add(registry, "Abs", SimpleUnary(Accepts::kNumeric, Op::kAbs));
  Add(registry, "Sign", SimpleUnary(Accepts::kNumeric, Op::kSign));
  Add(registry, "Not", SimpleUnary(Accepts::kBool, Op::kNot));
  Add(registry, "BitwiseNot", SimpleUnary(Accepts::kInteger, Op::kBitwiseNot));
  Add(registry, "Clip", CreateClip);
  Add(registry, "PRelu", CreatePRelu);

  // Binary arithmetic.
  Add(registry, "Add", BinaryFactory(Accepts::kNumeric, Op::kAdd));
  Add(registry, "Sub", BinaryFactory(Accepts::kNumeric, Op::kSub));
  Add(registry, "Mul", BinaryFactory(Accepts::kNumeric, Op::kMul));
  Add(registry, "Div", BinaryFactory(Accepts::kNumeric, Op::kDiv));
  Add(registry, "Pow", CreatePow);
  Add(registry, "Mod", CreateMod);
  Add(registry, "BitwiseAnd", BinaryFactory(Accepts::kInteger, Op::kBitwiseAnd));
  Add(registry, "BitwiseOr", BinaryFactory(Accepts::kInteger, Op::kBitwiseOr));
  Add(registry, "BitwiseXor", BinaryFactory(Accepts::kInteger, Op::kBitwiseXor));

  // Comparisons and logic.
  auto numeric_or_bool = [](Op op) {
    return [op](const LayerInit& init) -> std::unique_ptr<Layer> {
      const DType d = init.inputs.empty() || !In(init, 0).defined() ? DType::kUndefined
                                                                    : In(init, 0).dtype;
      return BinaryFactory(d == DType::kBool ? Accepts::kBool : Accepts::kNumeric, op)(init);
    };
  };
  Add(registry, "Equal", numeric_or_bool(Op::kEqual));
  Add(registry, "Less", BinaryFactory(Accepts::kNumeric, Op::kLess));
  Add(registry, "Greater", BinaryFactory(Accepts::kNumeric, Op::kGreater));
  Add(registry, "LessOrEqual", BinaryFactory(Accepts::kNumeric, Op::kLessOrEqual));
  Add(registry, "GreaterOrEqual", BinaryFactory(Accepts::kNumeric, Op::kGreaterOrEqual));
  Add(registry, "And", BinaryFactory(Accepts::kBool, Op::kAnd));
  Add(registry, "Or", BinaryFactory(Accepts::kBool, Op::kOr));
  Add(registry, "Xor", BinaryFactory(Accepts::kBool, Op::kXor));

  // Variadic.
  Add(registry, "Sum", VariadicFactory(Accepts::kNumeric, Op::kAdd, false));
  Add(registry, "Max", VariadicFactory(Accepts::kNumeric, Op::kMax, false));
  Add(registry, "Min", VariadicFactory(Accepts::kNumeric, Op::kMin, false));
  Add(registry, "Mean", VariadicFactory(Accepts::kFloat, Op::kAdd, true));

  Add(registry, "Where", CreateWhere);
  Add(registry, "Cast", CreateCast);
  Add(registry, "CastLike", CreateCast);  // Input 1 only gives the dtype: never read.
  Add(registry, "QuantizeLinear", CreateQuantizeLinear);
  Add(registry, "DequantizeLinear", CreateDequantizeLinear);
  Add(registry, "BatchNormalization", CreateBatchNorm);
  Add(registry, "KilnElementwise", CreateFused);
}

}  // namespace kiln::gpu
