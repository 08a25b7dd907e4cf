// GEMM layers through cuBLASLt:
//   MatMul      numpy batched matmul (rank 1..N, broadcasting batch dims).
//   Gemm        transA/transB, alpha, beta, C broadcast to [M, N].
//   KilnMatMul  act(A x B + bias + R): the builder's fused node
//               (builder/fuse_conv_gemm.cc). Inputs A, B (2-D, transB attr),
//               optional bias [N], optional residual R of the output's shape
//               (cuBLASLt's C with beta = 1, read in the epilogue);
//               `activation` in {"", "Relu", "Gelu"}. Gelu
//               uses cuBLASLt's (tanh-approximation) GELU epilogue only when
//               `gelu_approximate` is "tanh"; exact erf GELU runs as a
//               separate epilogue kernel.
//   Einsum      two-operand equations that are one batched matmul (with
//               transposes): "bij,bjk->bik", "bhqd,bhkd->bhqk", "ij,kj->ik"...
//
// Row-major tensors: Y[m, n] = A[m, k] B[k, n] is computed as the
// column-major product Y^T = B^T A^T, i.e. cuBLASLt's "A" is our B.
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/kernels/nn.h"
#include "cuda/layer.h"
#include "cuda/layers/cublaslt_util.h"
#include "cuda/library_check.h"
#include "ops/nn.h"
#include "ops/registry.h"

namespace kiln::gpu {
namespace {

bool IsGemmFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}


// Y's dtype for A/B of `in`: the same, or float32 from 16-bit inputs (cuBLASLt
// writes a float32 D from float16/bfloat16 A and B).
bool WritableBy(DType in, DType out) {
  return out == in || (out == DType::kFloat32 && (in == DType::kFloat16 || in == DType::kBFloat16));
}

void CheckGemmDType(const LayerInit& init, DType d) {
  KILN_LAYER_CHECK(init, IsGemmFloat(d), "dtype ", DTypeName(d),
                   " is not supported on GPU (float32, float16 and bfloat16 only; integer and "
                   "float64 matrix products are not implemented)");
}

// A layer whose work is one LtGemm plus optional steps before/after.
class GemmLayerBase : public Layer {
 public:
  int NumTactics() const override { return gemm_.NumTactics(); }
  void SetTactic(int tactic) override { gemm_.SetTactic(tactic); }
  std::string TacticName() const override { return gemm_.TacticName(); }
  size_t WorkspaceBytes() const override { return gemm_.WorkspaceBytes(); }

 protected:
  LtGemm gemm_;
};

// Batch bookkeeping of a numpy matmul: A [..., m, k] x B [..., k, n].
GemmShape MatMulShape(const std::vector<int64_t>& a_in, const std::vector<int64_t>& b_in) {
  std::vector<int64_t> a_dims = a_in, b_dims = b_in;
  if (a_dims.size() == 1) a_dims.insert(a_dims.begin(), 1);
  if (b_dims.size() == 1) b_dims.push_back(1);
  GemmShape s;
  s.m = a_dims[a_dims.size() - 2];
  s.k = a_dims.back();
  s.n = b_dims.back();
  KILN_CHECK(b_dims[b_dims.size() - 2] == s.k, "inner dims differ: ", DimsToString(a_in), " x ",
             DimsToString(b_in));
  s.lda = s.k;
  s.ldb = s.n;
  s.ldy = s.n;
  const std::vector<int64_t> a_batch(a_dims.begin(), a_dims.end() - 2);
  const std::vector<int64_t> b_batch(b_dims.begin(), b_dims.end() - 2);
  const std::vector<int64_t> batch = BroadcastDims(a_batch, b_batch);
  const int64_t batch_count = Product(batch);
  const int64_t a_count = Product(a_batch), b_count = Product(b_batch);
  if (batch_count == 0) {
    s.batch = 0;
    return s;
  }
  if (b_count == 1 && a_count == batch_count) {
    // Shared right operand: one GEMM over all rows of A.
    s.m *= batch_count;
    return s;
  }
  if (a_count == batch_count && b_count == batch_count) {
    s.batch = batch_count;
    s.stride_a = s.m * s.k;
    s.stride_b = s.k * s.n;
    s.stride_y = s.m * s.n;
    return s;
  }
  // Broadcast batch dims: one launch per output matrix (as the CPU kernel).
  const size_t rank = batch.size();
  std::vector<int64_t> a_strides(rank, 0), b_strides(rank, 0);
  int64_t a_step = s.m * s.k, b_step = s.k * s.n;
  for (size_t i = rank; i-- > 0;) {
    if (i >= rank - a_batch.size()) {
      const size_t ai = i + a_batch.size() - rank;
      if (a_batch[ai] != 1) a_strides[i] = a_step;
      a_step *= a_batch[ai];
    }
    if (i >= rank - b_batch.size()) {
      const size_t bi = i + b_batch.size() - rank;
      if (b_batch[bi] != 1) b_strides[i] = b_step;
      b_step *= b_batch[bi];
    }
  }
  std::vector<int64_t> index(rank, 0);
  int64_t a_offset = 0, b_offset = 0;
  for (int64_t item = 0; item < batch_count; ++item) {
    s.loop.push_back({a_offset, b_offset, item * s.m * s.n});
    for (size_t i = rank; i-- > 0;) {
      a_offset += a_strides[i];
      b_offset += b_strides[i];
      if (++index[i] < batch[i]) break;
      a_offset -= a_strides[i] * batch[i];
      b_offset -= b_strides[i] * batch[i];
      index[i] = 0;
    }
  }
  return s;
}

// ---- MatMul ----

class MatMulLayer : public GemmLayerBase {
 public:
  explicit MatMulLayer(const LayerInit& init) {
    KILN_LAYER_CHECK(init, init.inputs.size() == 2 && init.inputs[0].defined() &&
                               init.inputs[1].defined() && init.outputs.size() == 1,
                     "needs inputs A, B and one output");
    const TensorDesc& a = init.inputs[0];
    const TensorDesc& b = init.inputs[1];
    dtype_ = a.dtype;
    CheckGemmDType(init, dtype_);
    KILN_LAYER_CHECK(init, b.dtype == dtype_ && init.outputs[0].dtype == dtype_,
                     "A, B and Y must have one dtype");
    KILN_LAYER_CHECK(init, a.rank() >= 1 && b.rank() >= 1, "operands must have rank >= 1");
    GemmShape shape;
    try {
      shape = MatMulShape(a.dims, b.dims);
    } catch (const Error& e) {
      Fail(init.node.Describe(), " on GPU: ", e.what());
    }
    y_bytes_ = init.outputs[0].nbytes();
    zero_fill_ = shape.k == 0 && y_bytes_ > 0;
    if (!zero_fill_) gemm_.Init(init, dtype_, shape, 1.f, 0.f, Epilogue::kDefault);
  }
  int KernelLaunches() const override { return zero_fill_ ? 1 : gemm_.Launches(); }
  void Enqueue(const LaunchArgs& args) const override {
    if (zero_fill_) {
      KILN_CUDA_CHECK(cudaMemsetAsync(args.outputs[0], 0, y_bytes_, args.stream));
      return;
    }
    gemm_.Run(args, args.inputs[0], args.inputs[1], nullptr, args.outputs[0], nullptr);
  }

 private:
  DType dtype_ = DType::kUndefined;
  size_t y_bytes_ = 0;
  bool zero_fill_ = false;
};

// ---- Gemm ----

class GemmLayer : public GemmLayerBase {
 public:
  explicit GemmLayer(const LayerInit& init) {
    KILN_LAYER_CHECK(init, init.inputs.size() >= 2 && init.inputs.size() <= 3 &&
                               init.inputs[0].defined() && init.inputs[1].defined() &&
                               init.outputs.size() == 1,
                     "needs inputs A, B, optional C and one output");
    const TensorDesc& a = init.inputs[0];
    const TensorDesc& b = init.inputs[1];
    const TensorDesc& y = init.outputs[0];
    dtype_ = a.dtype;
    out_dtype_ = y.dtype;
    CheckGemmDType(init, dtype_);
    KILN_LAYER_CHECK(init, b.dtype == dtype_ && WritableBy(dtype_, y.dtype),
                     "A and B must have one dtype, Y that dtype or float32 (the builder's widened "
                     "logits), got ", a.ToString(), ", ", b.ToString(), ", ", y.ToString());
    KILN_LAYER_CHECK(init, a.rank() == 2 && b.rank() == 2 && y.rank() == 2,
                     "A, B and Y must be 2-D");
    const ir::Attributes& attrs = init.node.attrs;
    GemmShape s;
    s.trans_a = attrs.GetInt("transA", 0) != 0;
    s.trans_b = attrs.GetInt("transB", 0) != 0;
    const float alpha = attrs.GetFloat("alpha", 1.f);
    float beta = attrs.GetFloat("beta", 1.f);
    s.m = s.trans_a ? a.dims[1] : a.dims[0];
    s.k = s.trans_a ? a.dims[0] : a.dims[1];
    s.n = s.trans_b ? b.dims[0] : b.dims[1];
    KILN_LAYER_CHECK(init, (s.trans_b ? b.dims[1] : b.dims[0]) == s.k, "inner dims differ: A ",
                     a.ToString(), " B ", b.ToString());
    KILN_LAYER_CHECK(init, y.dims == std::vector<int64_t>({s.m, s.n}), "output ", y.ToString(),
                     " is not [", s.m, ",", s.n, "]");
    s.lda = a.dims[1];
    s.ldb = b.dims[1];
    s.ldy = s.n;
    Epilogue epilogue = Epilogue::kDefault;
    const bool has_c = init.inputs.size() > 2 && init.inputs[2].defined() && beta != 0.f;
    if (has_c) {
      const TensorDesc& c = init.inputs[2];
      KILN_LAYER_CHECK(init, c.dtype == out_dtype_, "C must have Y's dtype");
      KILN_LAYER_CHECK(init, c.rank() <= 2, "C must have rank <= 2, got ", c.ToString());
      c_rows_ = c.rank() == 2 ? c.dims[0] : 1;
      c_cols_ = c.rank() >= 1 ? c.dims[static_cast<size_t>(c.rank() - 1)] : 1;
      KILN_LAYER_CHECK(init, (c_rows_ == 1 || c_rows_ == s.m) && (c_cols_ == 1 || c_cols_ == s.n),
                       "C ", c.ToString(), " does not broadcast to [", s.m, ",", s.n, "]");
      if (c_rows_ == s.m && c_cols_ == s.n) {
        c_mode_ = CMode::kFull;
      } else if (c_rows_ == 1 && c_cols_ == s.n && beta == 1.f) {
        c_mode_ = CMode::kBias;
        epilogue = Epilogue::kBias;
        beta = 0.f;
      } else {
        c_mode_ = CMode::kBroadcast;
      }
    } else {
      beta = 0.f;
    }
    m_ = s.m;
    n_ = s.n;
    gemm_.Init(init, dtype_, s, alpha, beta, epilogue, out_dtype_);
  }
  int KernelLaunches() const override {
    return gemm_.Launches() + (c_mode_ == CMode::kBroadcast && !gemm_.empty() ? 1 : 0);
  }
  void Enqueue(const LaunchArgs& args) const override {
    if (gemm_.empty()) return;
    void* y = args.outputs[0];
    const void* c = c_mode_ == CMode::kNone ? nullptr : args.inputs[2];
    switch (c_mode_) {
      case CMode::kNone:
        gemm_.Run(args, args.inputs[0], args.inputs[1], nullptr, y, nullptr);
        break;
      case CMode::kFull:
        gemm_.Run(args, args.inputs[0], args.inputs[1], c, y, nullptr);
        break;
      case CMode::kBias:
        gemm_.Run(args, args.inputs[0], args.inputs[1], nullptr, y, c);
        break;
      case CMode::kBroadcast:
        // Y = C broadcast, then Y = alpha AB + beta Y in place.
        LaunchBroadcast2D(c, c_rows_, c_cols_, y, m_, n_, DTypeSize(out_dtype_), args.stream);
        gemm_.Run(args, args.inputs[0], args.inputs[1], y, y, nullptr);
        break;
    }
  }

 private:
  enum class CMode { kNone, kFull, kBias, kBroadcast };
  DType dtype_ = DType::kUndefined, out_dtype_ = DType::kUndefined;
  CMode c_mode_ = CMode::kNone;
  int64_t c_rows_ = 1, c_cols_ = 1, m_ = 0, n_ = 0;
};

// ---- KilnMatMul ----

class KilnMatMulLayer : public GemmLayerBase {
 public:
  explicit KilnMatMulLayer(const LayerInit& init) {
    KILN_LAYER_CHECK(init, init.inputs.size() >= 2 && init.inputs.size() <= 4 &&
                               init.inputs[0].defined() && init.inputs[1].defined() &&
                               init.outputs.size() == 1,
                     "needs inputs A, B, optional bias, optional residual and one output");
    const TensorDesc& a = init.inputs[0];
    const TensorDesc& b = init.inputs[1];
    const TensorDesc& y = init.outputs[0];
    dtype_ = a.dtype;
    out_dtype_ = y.dtype;
    CheckGemmDType(init, dtype_);
    KILN_LAYER_CHECK(init, b.dtype == dtype_ && WritableBy(dtype_, y.dtype),
                     "A and B must have one dtype, Y that dtype or float32, got ", a.ToString(),
                     ", ", b.ToString(), ", ", y.ToString());
    KILN_LAYER_CHECK(init, a.rank() >= 1 && b.rank() == 2, "A must have rank >= 1 and B be 2-D, got ",
                     a.ToString(), " and ", b.ToString());
    const ir::Attributes& attrs = init.node.attrs;
    GemmShape s;
    s.trans_b = attrs.GetInt("transB", 0) != 0;
    s.k = a.dims.back();
    s.m = Product(a.dims, 0, a.dims.size() - 1);
    s.n = s.trans_b ? b.dims[0] : b.dims[1];
    KILN_LAYER_CHECK(init, (s.trans_b ? b.dims[1] : b.dims[0]) == s.k, "inner dims differ: A ",
                     a.ToString(), " B ", b.ToString(), s.trans_b ? " (transposed)" : "");
    std::vector<int64_t> expected(a.dims.begin(), a.dims.end() - 1);
    expected.push_back(s.n);
    KILN_LAYER_CHECK(init, y.dims == expected, "output ", y.ToString(), " differs from ",
                     DimsToString(expected));
    s.lda = s.k;
    s.ldb = b.dims[1];
    s.ldy = s.n;
    const bool has_bias = init.inputs.size() > 2 && init.inputs[2].defined();
    if (has_bias) {
      const TensorDesc& bias = init.inputs[2];
      KILN_LAYER_CHECK(init, bias.dtype == out_dtype_ && bias.numel() == s.n &&
                                 (bias.rank() == 1 || (bias.rank() == 2 && bias.dims[0] == 1)),
                       "bias ", bias.ToString(), " must be ", DTypeName(out_dtype_), "[", s.n,
                       "]");
    }
    has_residual_ = init.inputs.size() > 3 && init.inputs[3].defined();
    if (has_residual_) {
      const TensorDesc& r = init.inputs[3];
      KILN_LAYER_CHECK(init, r.dtype == out_dtype_ && r.dims == y.dims && r.layout == y.layout,
                       "residual ", r.ToString(), " must match the output ", y.ToString());
    }
    const std::string activation = attrs.GetString("activation", "");
    Epilogue epilogue = has_bias ? Epilogue::kBias : Epilogue::kDefault;
    if (activation == "Relu") {
      epilogue = has_bias ? Epilogue::kReluBias : Epilogue::kRelu;
    } else if (activation == "Gelu") {
      if (attrs.GetString("gelu_approximate", "none") == "tanh") {
        epilogue = has_bias ? Epilogue::kGeluBias : Epilogue::kGelu;
      } else {
        exact_gelu_ = true;  // cuBLASLt's GELU is the tanh approximation.
      }
    } else {
      KILN_LAYER_CHECK(init, activation.empty(), "unsupported activation '", activation, "'");
    }
    count_ = y.numel();
    n_ = s.n;
    gemm_.Init(init, dtype_, s, 1.f, has_residual_ ? 1.f : 0.f, epilogue, out_dtype_);
  }
  int KernelLaunches() const override {
    return gemm_.Launches() + (exact_gelu_ && !gemm_.empty() ? 1 : 0);
  }
  void Enqueue(const LaunchArgs& args) const override {
    if (gemm_.empty()) return;
    const void* bias = args.inputs.size() > 2 ? args.inputs[2] : nullptr;
    const void* residual = has_residual_ ? args.inputs[3] : nullptr;
    gemm_.Run(args, args.inputs[0], args.inputs[1], residual, args.outputs[0], bias);
    if (exact_gelu_)
      LaunchBiasResidualActivation(args.outputs[0], nullptr, nullptr, count_, n_, 1, out_dtype_,
                                   NnActivation::kGeluErf, 0.f, 0.f, args.stream);
  }

 private:
  DType dtype_ = DType::kUndefined, out_dtype_ = DType::kUndefined;
  bool has_residual_ = false;
  bool exact_gelu_ = false;
  int64_t count_ = 0, n_ = 1;
};

// ---- Einsum ----

// Two-operand equations whose operands and output are, as stored, batched
// matrices: A = [batch.., m.., k..] or [batch.., k.., m..], B = [batch..,
// k.., n..] or [batch.., n.., k..], Y = [batch.., m.., n..] or [batch..,
// n.., m..], each group in one consistent label order and sizes equal
// between operands (no broadcasting, no diagonals, no summed-out labels of a
// single operand).
class EinsumLayer : public GemmLayerBase {
 public:
  explicit EinsumLayer(const LayerInit& init) {
    const std::string equation = init.node.attrs.GetString("equation");
    KILN_LAYER_CHECK(init, init.inputs.size() == 2 && init.inputs[0].defined() &&
                               init.inputs[1].defined() && init.outputs.size() == 1,
                     "only two-operand Einsum runs on GPU, got '", equation, "'");
    const TensorDesc& a = init.inputs[0];
    const TensorDesc& b = init.inputs[1];
    const TensorDesc& y = init.outputs[0];
    dtype_ = a.dtype;
    CheckGemmDType(init, dtype_);
    KILN_LAYER_CHECK(init, b.dtype == dtype_ && y.dtype == dtype_, "operands must share a dtype");
    nn::EinsumSpec spec;
    try {
      spec = nn::ParseEinsum(equation, {a.rank(), b.rank()});
    } catch (const Error& e) {
      Fail(init.node.Describe(), " on GPU: ", e.what());
    }
    auto unsupported = [&](const std::string& why) {
      Fail(init.node.Describe(), " on GPU: Einsum '", equation,
           "' is not a single batched matrix product (", why,
           "); only such two-operand forms are supported");
    };
    const std::vector<int>& la = spec.inputs[0];
    const std::vector<int>& lb = spec.inputs[1];
    const std::vector<int>& lo = spec.output;
    auto has = [](const std::vector<int>& v, int l) {
      return std::find(v.begin(), v.end(), l) != v.end();
    };
    auto distinct = [](std::vector<int> v) {
      std::sort(v.begin(), v.end());
      return std::adjacent_find(v.begin(), v.end()) == v.end();
    };
    if (!distinct(la) || !distinct(lb)) unsupported("a label repeats within an operand");
    std::vector<int64_t> size(static_cast<size_t>(spec.num_labels), -1);
    for (size_t i = 0; i < la.size(); ++i) size[static_cast<size_t>(la[i])] = a.dims[i];
    for (size_t i = 0; i < lb.size(); ++i) {
      int64_t& s = size[static_cast<size_t>(lb[i])];
      if (s >= 0 && s != b.dims[i]) unsupported("operand dims broadcast");
      s = b.dims[i];
    }
    std::vector<int> batch, m_labels, k_labels, n_labels;
    for (int l : la) {
      const bool in_b = has(lb, l), in_out = has(lo, l);
      if (in_b && in_out) batch.push_back(l);
      else if (in_b) k_labels.push_back(l);
      else if (in_out) m_labels.push_back(l);
      else unsupported("a label of the first operand is summed out alone");
    }
    for (int l : lb) {
      if (has(la, l)) continue;
      if (has(lo, l)) n_labels.push_back(l);
      else unsupported("a label of the second operand is summed out alone");
    }
    auto cat = [](std::vector<int> x, const std::vector<int>& p, const std::vector<int>& q) {
      x.insert(x.end(), p.begin(), p.end());
      x.insert(x.end(), q.begin(), q.end());
      return x;
    };
    auto product = [&](const std::vector<int>& labels) {
      int64_t p = 1;
      for (int l : labels) p *= size[static_cast<size_t>(l)];
      return p;
    };
    GemmShape s;
    s.m = product(m_labels);
    s.n = product(n_labels);
    s.k = product(k_labels);
    s.batch = product(batch);
    // A as stored.
    if (la == cat(batch, m_labels, k_labels)) {
      s.trans_a = false;
    } else if (la == cat(batch, k_labels, m_labels)) {
      s.trans_a = true;
    } else {
      unsupported("the first operand is not [batch, m, k] or [batch, k, m]");
    }
    if (lb == cat(batch, k_labels, n_labels)) {
      s.trans_b = false;
    } else if (lb == cat(batch, n_labels, k_labels)) {
      s.trans_b = true;
    } else {
      unsupported("the second operand is not [batch, k, n] or [batch, n, k]");
    }
    s.lda = s.trans_a ? s.m : s.k;
    s.ldb = s.trans_b ? s.k : s.n;
    s.stride_a = s.m * s.k;
    s.stride_b = s.k * s.n;
    s.stride_y = s.m * s.n;
    if (lo == cat(batch, m_labels, n_labels)) {
      s.ldy = s.n;
    } else if (lo == cat(batch, n_labels, m_labels)) {
      // Y^T = B^T A^T: swap the operands.
      swap_ = true;
      std::swap(s.m, s.n);
      std::swap(s.lda, s.ldb);
      std::swap(s.stride_a, s.stride_b);
      const bool ta = s.trans_a;
      s.trans_a = !s.trans_b;
      s.trans_b = !ta;
      s.ldy = s.n;
    } else {
      unsupported("the output is not [batch, m, n] or [batch, n, m]");
    }
    if (s.batch <= 1) {
      s.batch = s.batch == 0 ? 0 : 1;
      s.stride_a = s.stride_b = s.stride_y = 0;
    }
    y_bytes_ = y.nbytes();
    zero_fill_ = s.k == 0 && y_bytes_ > 0;
    if (!zero_fill_) gemm_.Init(init, dtype_, s, 1.f, 0.f, Epilogue::kDefault);
  }
  int KernelLaunches() const override { return zero_fill_ ? 1 : gemm_.Launches(); }
  void Enqueue(const LaunchArgs& args) const override {
    if (zero_fill_) {
      KILN_CUDA_CHECK(cudaMemsetAsync(args.outputs[0], 0, y_bytes_, args.stream));
      return;
    }
    const void* a = args.inputs[swap_ ? 1 : 0];
    const void* b = args.inputs[swap_ ? 0 : 1];
    gemm_.Run(args, a, b, nullptr, args.outputs[0], nullptr);
  }

 private:
  DType dtype_ = DType::kUndefined;
  bool swap_ = false;
  bool zero_fill_ = false;
  size_t y_bytes_ = 0;
};

template <typename L>
GpuOpDef Def(const char* op) {
  return {op, [](const LayerInit& init) -> std::unique_ptr<Layer> { return std::make_unique<L>(init); },
          /*accepts_nhwc=*/false};
}

}  // namespace

void RegisterAttentionGpuLayers(GpuLayerRegistry& registry);  // layers/attention.cc

void RegisterGemmGpuLayers(GpuLayerRegistry& registry) {
  RegisterAttentionGpuLayers(registry);
  registry.Register(Def<MatMulLayer>("MatMul"));
  registry.Register(Def<GemmLayer>("Gemm"));
  registry.Register(Def<KilnMatMulLayer>("KilnMatMul"));
  registry.Register(Def<EinsumLayer>("Einsum"));
}

}  // namespace kiln::gpu
