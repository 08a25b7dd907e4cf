// Convolution layers through cuDNN's legacy convolution API:
//   Conv           ONNX Conv (X, W, optional B), 1-D/2-D/3-D, groups, dilations,
//                  strides, pads/auto_pad; row-major NCHW or (2-D) NHWC.
//   KilnConv       act(conv(X, W) + B + Z): the builder's fused node
//                  (builder/fuse_conv_gemm.cc); Conv's attributes plus
//                  `activation`, `activation_alpha`, `activation_beta`.
//   ConvTranspose  row-major, through cudnnConvolutionBackwardData.
//
// Tactics are (variant, algorithm, math type, fused?) tuples. A variant is one
// set of cuDNN descriptors: the node as given, or (NHWC 16-bit with C not a
// multiple of 8) with channels zero-padded to 8 in the workspace so tensor-core
// kernels apply. Asymmetric pads, which cuDNN's legacy API cannot express, are
// applied by copying X into a padded workspace buffer first. A "fused" tactic
// runs cudnnConvolutionBiasActivationForward (bias + residual + ReLU/identity
// in cuDNN); the others run cudnnConvolutionForward and one epilogue kernel.
// A later tactic kind can execute a cuDNN backend-API execution plan: Tactic
// only records what Enqueue needs to pick the path.
//
// 1x1 / stride 1 / no padding / group 1 NHWC convolutions are also offered as
// one cuBLASLt GEMM: Y[N*H*W, K] = X[N*H*W, C] x W[K, C]^T with the residual
// as the C matrix (beta = 1) and bias/ReLU as the epilogue, i.e.
// relu(X W^T + Z + bias). At small N*H*W cuDNN's legacy path ran ResNet-50's
// 1x1 convolutions through IMPLICIT_GEMM/default, ~10x slower than this.
#include <cudnn.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/kernels/nn.h"
#include "cuda/layer.h"
#include "cuda/layers/cublaslt_util.h"
#include "cuda/library_check.h"
#include "ops/nn.h"

namespace kiln::gpu {

void RegisterGemmGpuLayers(GpuLayerRegistry& registry);  // layers/gemm.cc
void RegisterConvPoolGpuLayers(GpuLayerRegistry& registry);  // layers/conv_pool.cc

namespace {

constexpr size_t kMaxConvWorkspace = size_t{256} << 20;  // 256 MiB per cuDNN algorithm.
constexpr size_t kAlign = 256;

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// ---- RAII cuDNN descriptors ----

template <typename T, cudnnStatus_t (*Create)(T*), cudnnStatus_t (*Destroy)(T)>
class CudnnDesc {
 public:
  CudnnDesc() { KILN_CUDNN_CHECK(Create(&desc_)); }
  ~CudnnDesc() {
    if (desc_) Destroy(desc_);
  }
  CudnnDesc(const CudnnDesc&) = delete;
  CudnnDesc& operator=(const CudnnDesc&) = delete;
  T get() const { return desc_; }

 private:
  T desc_ = nullptr;
};

using TensorDescriptor =
    CudnnDesc<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDescriptor =
    CudnnDesc<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDescriptor = CudnnDesc<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                                 cudnnDestroyConvolutionDescriptor>;
using ActivationDescriptor =
    CudnnDesc<cudnnActivationDescriptor_t, cudnnCreateActivationDescriptor,
              cudnnDestroyActivationDescriptor>;

bool IsConvFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

cudnnDataType_t CudnnType(DType d) {
  switch (d) {
    case DType::kFloat32: return CUDNN_DATA_FLOAT;
    case DType::kFloat16: return CUDNN_DATA_HALF;
    case DType::kBFloat16: return CUDNN_DATA_BFLOAT16;
    default: Fail("cuDNN convolution does not support dtype ", DTypeName(d));
  }
}

int ToInt(const LayerInit& init, int64_t v, const char* what) {
  KILN_LAYER_CHECK(init, v >= 0 && v <= INT_MAX, what, " ", v,
                   " does not fit cuDNN's 32-bit descriptors");
  return static_cast<int>(v);
}

std::vector<int> ToInts(const LayerInit& init, const std::vector<int64_t>& v, const char* what) {
  std::vector<int> out;
  for (int64_t x : v) out.push_back(ToInt(init, x, what));
  return out;
}

const char* FwdAlgoName(cudnnConvolutionFwdAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: return "IMPLICIT_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return "IMPLICIT_PRECOMP_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return "GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT: return "DIRECT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT: return "FFT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING: return "FFT_TILING";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD: return "WINOGRAD";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED: return "WINOGRAD_NONFUSED";
    default: return "UNKNOWN";
  }
}

const char* BwdDataAlgoName(cudnnConvolutionBwdDataAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0: return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1: return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT: return "FFT";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING: return "FFT_TILING";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD: return "WINOGRAD";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED: return "WINOGRAD_NONFUSED";
    default: return "UNKNOWN";
  }
}

const char* MathName(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor_op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor_op_conv";
    case CUDNN_FMA_MATH: return "fma";
    default: return "unknown";
  }
}

// The math type a heuristic result runs with, or false to drop it. FP32
// without TF32 is restricted to FMA kernels; FP32 with TF32 may use tensor
// cores but never down-conversion to FP16.
bool AcceptMath(DType dtype, bool tf32, cudnnMathType_t reported, cudnnMathType_t* use) {
  if (dtype == DType::kFloat32) {
    if (!tf32) {
      *use = CUDNN_FMA_MATH;
      return true;
    }
    if (reported == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
    *use = reported;
    return true;
  }
  *use = reported;
  return true;
}

cudnnMathType_t InitialMath(DType dtype, bool tf32) {
  if (dtype == DType::kFloat32) return tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  return CUDNN_TENSOR_OP_MATH;
}

// Strides of an NCHW-ordered dims vector stored with `layout` (NHWC only for rank 4).
std::vector<int64_t> StridesFor(const std::vector<int64_t>& dims, Layout layout) {
  if (layout == Layout::kRowMajor) return RowMajorStrides(dims);
  // dims = N, C, H, W in NHWC memory.
  const int64_t c = dims[1], h = dims[2], w = dims[3];
  return {h * w * c, 1, w * c, c};
}

void SetTensor(const LayerInit& init, const TensorDescriptor& desc, DType dtype,
               const std::vector<int64_t>& dims, Layout layout) {
  const std::vector<int64_t> strides = StridesFor(dims, layout);
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  ToInt(init, numel, "tensor element count");
  std::vector<int> d32 = ToInts(init, dims, "dim"), s32 = ToInts(init, strides, "stride");
  KILN_CUDNN_CHECK(cudnnSetTensorNdDescriptor(desc.get(), CudnnType(dtype),
                                              static_cast<int>(d32.size()), d32.data(),
                                              s32.data()));
}

void SetFilter(const LayerInit& init, const FilterDescriptor& desc, DType dtype,
               const std::vector<int64_t>& dims, Layout layout) {
  std::vector<int> d32 = ToInts(init, dims, "filter dim");
  KILN_CUDNN_CHECK(cudnnSetFilterNdDescriptor(
      desc.get(), CudnnType(dtype),
      layout == Layout::kNHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
      static_cast<int>(d32.size()), d32.data()));
}

// Inserts a unit spatial axis after N and C (1-D convolutions run as 2-D).
std::vector<int64_t> Promote1D(std::vector<int64_t> dims) {
  if (dims.size() == 3) dims.insert(dims.begin() + 2, 1);
  return dims;
}

std::vector<int64_t> Spatial(const std::vector<int64_t>& dims) {
  return std::vector<int64_t>(dims.begin() + 2, dims.end());
}

// Physical (memory-order) dims of NCHW-ordered dims stored with layout.
std::vector<int64_t> Physical(const std::vector<int64_t>& dims, Layout layout) {
  if (layout == Layout::kRowMajor) return dims;
  return {dims[0], dims[2], dims[3], dims[1]};
}

// Parameters of a copy from physical in_dims to physical out_dims with the
// NCHW-ordered `begin` offsets (per logical axis) mapped to memory order.
PadCopyParams MakePadCopy(const std::vector<int64_t>& in_dims, const std::vector<int64_t>& out_dims,
                          const std::vector<int64_t>& begin, Layout layout) {
  const std::vector<int64_t> pin = Physical(in_dims, layout), pout = Physical(out_dims, layout),
                             pbegin = Physical(begin, layout);
  PadCopyParams p;
  p.rank = static_cast<int>(pin.size());
  KILN_CHECK(p.rank <= kPadCopyMaxRank, "pad copy rank ", p.rank, " too large");
  for (int i = 0; i < p.rank; ++i) {
    p.in_dims[i] = pin[static_cast<size_t>(i)];
    p.out_dims[i] = pout[static_cast<size_t>(i)];
    p.begin[i] = pbegin[static_cast<size_t>(i)];
  }
  return p;
}

int64_t Numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// ---- Activation attributes of KilnConv / KilnMatMul ----

struct ActivationSpec {
  NnActivation kind = NnActivation::kNone;
  float alpha = 0.f;
  float beta = 0.f;
};

ActivationSpec ParseConvActivation(const LayerInit& init) {
  const ir::Attributes& attrs = init.node.attrs;
  const std::string name = attrs.GetString("activation", "");
  ActivationSpec spec;
  auto alpha = [&](float def) { return attrs.GetFloat("activation_alpha", def); };
  auto beta = [&](float def) { return attrs.GetFloat("activation_beta", def); };
  if (name.empty()) {
    spec.kind = NnActivation::kNone;
  } else if (name == "Relu") {
    spec.kind = NnActivation::kRelu;
  } else if (name == "Clip") {
    spec.kind = NnActivation::kClip;
    spec.alpha = alpha(-std::numeric_limits<float>::infinity());
    spec.beta = beta(std::numeric_limits<float>::infinity());
  } else if (name == "Sigmoid") {
    spec.kind = NnActivation::kSigmoid;
  } else if (name == "Tanh") {
    spec.kind = NnActivation::kTanh;
  } else if (name == "LeakyRelu") {
    spec.kind = NnActivation::kLeakyRelu;
    spec.alpha = alpha(0.01f);
  } else if (name == "HardSigmoid") {
    spec.kind = NnActivation::kHardSigmoid;
    spec.alpha = alpha(0.2f);
    spec.beta = beta(0.5f);
  } else if (name == "HardSwish") {
    spec.kind = NnActivation::kHardSwish;
  } else if (name == "SiLU") {
    spec.kind = NnActivation::kSiLU;
  } else {
    Fail(init.node.Describe(), " on GPU: unsupported activation '", name, "'");
  }
  return spec;
}

// ---- Conv / KilnConv ----

enum class ConvPath : uint8_t {
  kLegacyUnfused,  // cudnnConvolutionForward + kiln epilogue kernel (if needed).
  kLegacyFused,    // cudnnConvolutionBiasActivationForward.
  kLtGemm,         // 1x1 convolution as one cuBLASLt GEMM with epilogue.
  // kBackendPlan: a cuDNN backend execution plan (conv+bias+add+act), later.
};

struct ConvTactic {
  int variant = 0;
  ConvPath path = ConvPath::kLegacyUnfused;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t cudnn_workspace = 0;
  int gemm_algo = -1;  // kLtGemm: index of the cuBLASLt heuristic algorithm.
};

// One way to describe the convolution to cuDNN.
struct ConvVariant {
  std::string name;
  TensorDescriptor x_desc;
  FilterDescriptor w_desc;
  ConvDescriptor conv_desc;
  // X is first copied into the workspace (asymmetric pads and/or channel
  // padding); W too when channels are padded.
  bool copy_x = false;
  PadCopyParams x_copy;
  size_t x_copy_bytes = 0;
  bool copy_w = false;
  PadCopyParams w_copy;
  size_t w_copy_bytes = 0;
};

class ConvLayer : public Layer {
 public:
  explicit ConvLayer(const LayerInit& init) { Create(init); }

  int NumTactics() const override { return empty_ ? 1 : static_cast<int>(tactics_.size()); }
  void SetTactic(int tactic) override {
    if (empty_) return;
    KILN_CHECK(tactic >= 0 && tactic < static_cast<int>(tactics_.size()), "Conv tactic ", tactic,
               " out of range [0, ", tactics_.size(), ")");
    current_ = tactic;
    const ConvTactic& t = tactics_[static_cast<size_t>(current_)];
    if (t.path == ConvPath::kLtGemm) {
      gemm_->SetTactic(t.gemm_algo);
      return;
    }
    KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(variants_[static_cast<size_t>(t.variant)]->conv_desc.get(),
                                                 t.math));
  }
  std::string TacticName() const override {
    if (empty_) return "empty";
    const ConvTactic& t = tactics_[static_cast<size_t>(current_)];
    if (t.path == ConvPath::kLtGemm) return "cublaslt_gemm/" + gemm_->TacticName();
    std::string name = StrCat(FwdAlgoName(t.algo), "/", MathName(t.math));
    const std::string& variant = variants_[static_cast<size_t>(t.variant)]->name;
    if (!variant.empty()) name += "/" + variant;
    if (t.path == ConvPath::kLegacyFused) name += "/fused";
    return name;
  }
  size_t WorkspaceBytes() const override {
    if (empty_) return 0;
    const ConvTactic& t = tactics_[static_cast<size_t>(current_)];
    if (t.path == ConvPath::kLtGemm) return gemm_->WorkspaceBytes();
    const ConvVariant& v = *variants_[static_cast<size_t>(t.variant)];
    return AlignUp(t.cudnn_workspace) + AlignUp(v.x_copy_bytes) + AlignUp(v.w_copy_bytes);
  }
  int KernelLaunches() const override {
    if (empty_) return 0;
    const ConvTactic& t = tactics_[static_cast<size_t>(current_)];
    if (t.path == ConvPath::kLtGemm) return gemm_->Launches();
    const ConvVariant& v = *variants_[static_cast<size_t>(t.variant)];
    int launches = (v.copy_x ? 1 : 0) + (v.copy_w ? 1 : 0);
    if (t.path == ConvPath::kLegacyFused) return launches + 2;
    return launches + 1 + (NeedsEpilogue() ? 1 : 0);
  }

  void Enqueue(const LaunchArgs& args) const override {
    if (empty_) return;
    const ConvTactic& t = tactics_[static_cast<size_t>(current_)];
    if (t.path == ConvPath::kLtGemm) {
      // A = X [N*H*W, C], B = W [K, C] (transposed), C = Z, bias in the epilogue.
      gemm_->Run(args, args.inputs[0], args.inputs[1], has_residual_ ? args.inputs[3] : nullptr,
                 args.outputs[0], has_bias_ ? args.inputs[2] : nullptr);
      return;
    }
    const ConvVariant& v = *variants_[static_cast<size_t>(t.variant)];
    char* ws = static_cast<char*>(args.workspace);
    void* cudnn_ws = t.cudnn_workspace ? ws : nullptr;
    size_t offset = AlignUp(t.cudnn_workspace);
    const void* x = args.inputs[0];
    const void* w = args.inputs[1];
    const void* bias = has_bias_ ? args.inputs[2] : nullptr;
    const void* z = has_residual_ ? args.inputs[3] : nullptr;
    void* y = args.outputs[0];
    if (v.copy_x) {
      void* xp = ws + offset;
      offset += AlignUp(v.x_copy_bytes);
      LaunchPadCopy(x, xp, v.x_copy, DTypeSize(dtype_), args.stream);
      x = xp;
    }
    if (v.copy_w) {
      void* wp = ws + offset;
      LaunchPadCopy(w, wp, v.w_copy, DTypeSize(dtype_), args.stream);
      w = wp;
    }
    cudnnHandle_t handle = args.handles.cudnn;
    KILN_CUDNN_CHECK(cudnnSetStream(handle, args.stream));
    const float one = 1.f, zero = 0.f;
    if (t.path == ConvPath::kLegacyFused) {
      // z aliases y with alpha2 = 0 when there is no residual.
      KILN_CUDNN_CHECK(cudnnConvolutionBiasActivationForward(
          handle, &one, v.x_desc.get(), x, v.w_desc.get(), w, v.conv_desc.get(), t.algo, cudnn_ws,
          t.cudnn_workspace, z ? &one : &zero, y_desc_.get(), z ? z : y, bias_desc_.get(), bias,
          act_desc_.get(), y_desc_.get(), y));
      return;
    }
    KILN_CUDNN_CHECK(cudnnConvolutionForward(handle, &one, v.x_desc.get(), x, v.w_desc.get(), w,
                                             v.conv_desc.get(), t.algo, cudnn_ws,
                                             t.cudnn_workspace, &zero, y_desc_.get(), y));
    if (NeedsEpilogue())
      LaunchBiasResidualActivation(y, bias, z, y_count_, channels_, inner_, dtype_,
                                   activation_.kind, activation_.alpha, activation_.beta,
                                   args.stream);
  }

 private:
  bool NeedsEpilogue() const {
    return has_bias_ || has_residual_ || activation_.kind != NnActivation::kNone;
  }

  void Create(const LayerInit& init) {
    const bool fused_node = init.node.op_type == "KilnConv";
    KILN_LAYER_CHECK(init, init.inputs.size() >= 2 && init.inputs[0].defined() &&
                               init.inputs[1].defined(),
                     "needs inputs X and W");
    KILN_LAYER_CHECK(init, init.inputs.size() <= (fused_node ? 4u : 3u), "has ",
                     init.inputs.size(), " inputs, expected at most ", fused_node ? 4 : 3);
    KILN_LAYER_CHECK(init, init.outputs.size() == 1, "needs exactly one output");
    const TensorDesc& xd = init.inputs[0];
    const TensorDesc& wd = init.inputs[1];
    const TensorDesc& yd = init.outputs[0];
    dtype_ = xd.dtype;
    KILN_LAYER_CHECK(init, IsConvFloat(dtype_), "dtype ", DTypeName(dtype_),
                     " is not supported (float32, float16, bfloat16)");
    KILN_LAYER_CHECK(init, wd.dtype == dtype_ && yd.dtype == dtype_, "W ", wd.ToString(),
                     " and Y ", yd.ToString(), " must have X's dtype ", DTypeName(dtype_));
    const int rank = xd.rank();
    KILN_LAYER_CHECK(init, rank >= 3 && rank <= 5, "X ", xd.ToString(),
                     " must have 1 to 3 spatial dims");
    KILN_LAYER_CHECK(init, wd.rank() == rank && yd.rank() == rank, "W ", wd.ToString(),
                     " and Y ", yd.ToString(), " must have X's rank");
    layout_ = xd.layout;
    KILN_LAYER_CHECK(init, layout_ == Layout::kRowMajor || rank == 4,
                     "an NHWC input must be 4-D, got ", xd.ToString());
    KILN_LAYER_CHECK(init, yd.layout == layout_, "output layout ", LayoutName(yd.layout),
                     " differs from the input layout ", LayoutName(layout_));
    KILN_LAYER_CHECK(init, wd.layout == Layout::kRowMajor || rank == 4,
                     "an NHWC weight must be 4-D");
    const Layout w_layout = wd.layout;

    has_bias_ = init.inputs.size() > 2 && init.inputs[2].defined();
    has_residual_ = fused_node && init.inputs.size() > 3 && init.inputs[3].defined();
    const int64_t group = init.node.attrs.GetInt("group", 1);
    const int64_t n = xd.dims[0], c = xd.dims[1], k = wd.dims[0];
    KILN_LAYER_CHECK(init, group >= 1 && c % group == 0 && k % group == 0 &&
                               wd.dims[1] * group == c,
                     "X ", xd.ToString(), " and W ", wd.ToString(), " do not match group ", group);
    if (has_bias_) {
      const TensorDesc& b = init.inputs[2];
      KILN_LAYER_CHECK(init, b.dtype == dtype_ && b.rank() == 1 && b.dims[0] == k, "bias ",
                       b.ToString(), " must be ", DTypeName(dtype_), "[", k, "]");
    }
    if (has_residual_) {
      const TensorDesc& z = init.inputs[3];
      KILN_LAYER_CHECK(init, z.dtype == dtype_ && z.dims == yd.dims && z.layout == layout_,
                       "residual Z ", z.ToString(), " must match Y ", yd.ToString());
    }
    activation_ = fused_node ? ParseConvActivation(init) : ActivationSpec{};

    nn::WindowGeometry g =
        nn::ComputeWindowGeometry(init.node.attrs, Spatial(xd.dims), Spatial(wd.dims), false);
    std::vector<int64_t> expected = {n, k};
    expected.insert(expected.end(), g.output.begin(), g.output.end());
    KILN_LAYER_CHECK(init, expected == yd.dims, "output ", yd.ToString(), " differs from the ",
                     "convolution's ", DimsToString(expected));

    y_count_ = yd.numel();
    channels_ = k;
    inner_ = layout_ == Layout::kNHWC ? 1 : Numel(Spatial(yd.dims));
    if (y_count_ == 0) {
      empty_ = true;
      return;
    }
    KILN_LAYER_CHECK(init, xd.numel() > 0 && wd.numel() > 0, "empty X or W with a non-empty Y");

    // 1-D runs as 2-D with a unit leading spatial axis.
    const std::vector<int64_t> x_dims = Promote1D(xd.dims), w_dims = Promote1D(wd.dims),
                               y_dims = Promote1D(yd.dims);
    std::vector<int64_t> pb = g.pads_begin, pe = g.pads_end, st = g.strides, dl = g.dilations;
    if (rank == 3) {
      pb.insert(pb.begin(), 0);
      pe.insert(pe.begin(), 0);
      st.insert(st.begin(), 1);
      dl.insert(dl.begin(), 1);
    }

    SetTensor(init, y_desc_, dtype_, y_dims, layout_);
    {
      std::vector<int64_t> bias_dims(y_dims.size(), 1);
      bias_dims[1] = k;
      SetTensor(init, bias_desc_, dtype_, bias_dims, Layout::kRowMajor);
    }
    KILN_CUDNN_CHECK(cudnnSetActivationDescriptor(
        act_desc_.get(),
        activation_.kind == NnActivation::kRelu ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
        CUDNN_PROPAGATE_NAN, 0.0));

    const bool fusable_activation =
        activation_.kind == NnActivation::kNone || activation_.kind == NnActivation::kRelu;
    const bool can_fuse = has_bias_ && fusable_activation;

    auto add_variant = [&](int64_t channel_pad_to) {
      auto v = std::make_unique<ConvVariant>();
      const int64_t cp = channel_pad_to > 0 ? (c + channel_pad_to - 1) / channel_pad_to * channel_pad_to : c;
      bool asymmetric = false;
      for (size_t i = 0; i < pb.size(); ++i) asymmetric |= pb[i] != pe[i];
      std::vector<int64_t> xv = x_dims, wv = w_dims;
      xv[1] = cp;
      wv[1] = cp / group;
      std::vector<int64_t> conv_pads = pb;
      if (asymmetric) {
        for (size_t i = 0; i < pb.size(); ++i) {
          xv[2 + i] = x_dims[2 + i] + pb[i] + pe[i];
          conv_pads[i] = 0;
        }
      }
      if (asymmetric || cp != c) {
        v->copy_x = true;
        std::vector<int64_t> begin(x_dims.size(), 0);
        if (asymmetric)
          for (size_t i = 0; i < pb.size(); ++i) begin[2 + i] = pb[i];
        v->x_copy = MakePadCopy(x_dims, xv, begin, layout_);
        v->x_copy_bytes = static_cast<size_t>(Numel(xv)) * DTypeSize(dtype_);
        v->name = asymmetric ? "prepad" : "";
      }
      if (cp != c) {
        v->copy_w = true;
        v->w_copy = MakePadCopy(w_dims, wv, std::vector<int64_t>(w_dims.size(), 0), w_layout);
        v->w_copy_bytes = static_cast<size_t>(Numel(wv)) * DTypeSize(dtype_);
        v->name += StrCat(v->name.empty() ? "" : "+", "chpad", channel_pad_to);
      }
      SetTensor(init, v->x_desc, dtype_, xv, layout_);
      SetFilter(init, v->w_desc, dtype_, wv, w_layout);
      std::vector<int> p32 = ToInts(init, conv_pads, "pad"), s32 = ToInts(init, st, "stride"),
                       d32 = ToInts(init, dl, "dilation");
      KILN_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(
          v->conv_desc.get(), static_cast<int>(p32.size()), p32.data(), s32.data(), d32.data(),
          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
      KILN_CUDNN_CHECK(cudnnSetConvolutionGroupCount(v->conv_desc.get(), ToInt(init, group, "group")));
      KILN_CUDNN_CHECK(
          cudnnSetConvolutionMathType(v->conv_desc.get(), InitialMath(dtype_, init.precision.tf32)));
      // cuDNN must agree on the output dims.
      std::vector<int> out(y_dims.size(), 0);
      KILN_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(v->conv_desc.get(), v->x_desc.get(),
                                                             v->w_desc.get(),
                                                             static_cast<int>(out.size()), out.data()));
      for (size_t i = 0; i < out.size(); ++i)
        KILN_LAYER_CHECK(init, out[i] == y_dims[i], "cuDNN computes output dim ", i, " = ", out[i],
                         ", expected ", y_dims[i]);
      variants_.push_back(std::move(v));
      EnumerateAlgorithms(init, static_cast<int>(variants_.size()) - 1, can_fuse);
    };

    add_variant(0);
    // NHWC 16-bit with C not a multiple of 8 (e.g. the RGB input conv):
    // tensor-core kernels need 8-aligned channels; a zero-padded copy offers
    // them as extra tactics (or the only ones, when cuDNN supports nothing
    // for the original channel count).
    if (layout_ == Layout::kNHWC && dtype_ != DType::kFloat32 && group == 1 && c % 8 != 0)
      add_variant(8);
    // Appended after cuDNN's tactics so stored cuDNN tactic indices keep their meaning.
    bool pointwise = group == 1 && w_dims[2] == 1 && w_dims[3] == 1;
    for (size_t i = 0; i < pb.size(); ++i)
      pointwise = pointwise && pb[i] == 0 && pe[i] == 0 && st[i] == 1 && dl[i] == 1;
    if (pointwise && layout_ == Layout::kNHWC && rank == 4 && fusable_activation)
      AddGemmTactics(init, n * x_dims[2] * x_dims[3], c, k);
    KILN_LAYER_CHECK(init, !tactics_.empty(), "cuDNN reports no supported forward algorithm for X ",
                     xd.ToString(), ", W ", wd.ToString(), " (group ", group, ", ",
                     DTypeName(dtype_), ")");
    SetTactic(0);
  }

  // The 1x1 convolution as Y[m, k] = X[m, c] W[k, c]^T (+ Z) with the bias
  // and ReLU epilogue (cuBLASLt applies it to alpha*A*B + beta*C). X, Y and
  // Z are NHWC, i.e. m = N*H*W rows of C (K) contiguous channels; W is
  // [K, C] in either layout since R = S = 1. Not offered when cuBLASLt has
  // no algorithm for the shape.
  void AddGemmTactics(const LayerInit& init, int64_t m, int64_t c, int64_t k) {
    GemmShape s;
    s.m = m;
    s.k = c;
    s.n = k;
    s.trans_a = false;
    s.trans_b = true;
    s.lda = c;
    s.ldb = c;
    s.ldy = k;
    const bool relu = activation_.kind == NnActivation::kRelu;
    Epilogue epilogue = relu ? Epilogue::kRelu : Epilogue::kDefault;
    if (has_bias_) epilogue = relu ? Epilogue::kReluBias : Epilogue::kBias;
    auto gemm = std::make_unique<LtGemm>();
    try {
      gemm->Init(init, dtype_, s, 1.f, has_residual_ ? 1.f : 0.f, epilogue);
    } catch (const Error&) {
      return;  // cuDNN's tactics remain.
    }
    if (gemm->empty()) return;
    for (int i = 0; i < gemm->NumTactics(); ++i) {
      ConvTactic t;
      t.path = ConvPath::kLtGemm;
      t.gemm_algo = i;
      tactics_.push_back(t);
    }
    gemm_ = std::move(gemm);
  }

  void EnumerateAlgorithms(const LayerInit& init, int variant_index, bool can_fuse) {
    ConvVariant& v = *variants_[static_cast<size_t>(variant_index)];
    cudnnHandle_t handle = init.handles.cudnn;
    KILN_LAYER_CHECK(init, handle != nullptr, "needs a cuDNN handle");
    int max_count = 0;
    KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &max_count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(max_count, 1)));
    int returned = 0;
    KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, v.x_desc.get(), v.w_desc.get(),
                                                            v.conv_desc.get(), y_desc_.get(),
                                                            static_cast<int>(perf.size()),
                                                            &returned, perf.data()));
    std::vector<ConvTactic> found;
    for (int i = 0; i < returned; ++i) {
      const cudnnConvolutionFwdAlgoPerf_t& p = perf[static_cast<size_t>(i)];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      ConvTactic t;
      t.variant = variant_index;
      t.algo = p.algo;
      if (!AcceptMath(dtype_, init.precision.tf32, p.mathType, &t.math)) continue;
      bool duplicate = false;
      for (const ConvTactic& f : found) duplicate |= f.algo == t.algo && f.math == t.math;
      if (duplicate) continue;
      // Workspace for this algorithm under the math type it will run with.
      if (cudnnSetConvolutionMathType(v.conv_desc.get(), t.math) != CUDNN_STATUS_SUCCESS) continue;
      size_t bytes = 0;
      if (cudnnGetConvolutionForwardWorkspaceSize(handle, v.x_desc.get(), v.w_desc.get(),
                                                  v.conv_desc.get(), y_desc_.get(), t.algo,
                                                  &bytes) != CUDNN_STATUS_SUCCESS)
        continue;
      t.cudnn_workspace = std::max(bytes, p.memory);
      if (t.cudnn_workspace > kMaxConvWorkspace) continue;
      found.push_back(t);
    }
    KILN_CUDNN_CHECK(
        cudnnSetConvolutionMathType(v.conv_desc.get(), InitialMath(dtype_, init.precision.tf32)));
    std::sort(found.begin(), found.end(), [](const ConvTactic& a, const ConvTactic& b) {
      if (a.algo != b.algo) return a.algo < b.algo;
      return a.math < b.math;
    });
    for (const ConvTactic& t : found) {
      tactics_.push_back(t);
      // The legacy fused API: identity activation only with
      // IMPLICIT_PRECOMP_GEMM; restricted to that algorithm for ReLU too
      // (the combination cuDNN documents and the fast one on H100).
      if (can_fuse && t.algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM) {
        ConvTactic fused = t;
        fused.path = ConvPath::kLegacyFused;
        tactics_.push_back(fused);
      }
    }
  }

  DType dtype_ = DType::kUndefined;
  Layout layout_ = Layout::kRowMajor;
  bool has_bias_ = false;
  bool has_residual_ = false;
  bool empty_ = false;
  ActivationSpec activation_;
  int64_t y_count_ = 0, channels_ = 1, inner_ = 1;
  TensorDescriptor y_desc_;
  TensorDescriptor bias_desc_;
  ActivationDescriptor act_desc_;
  std::vector<std::unique_ptr<ConvVariant>> variants_;
  std::vector<ConvTactic> tactics_;
  std::unique_ptr<LtGemm> gemm_;  // Set when kLtGemm tactics exist.
  int current_ = 0;
};

// ---- ConvTranspose ----

struct ConvTransposeTactic {
  cudnnConvolutionBwdDataAlgo_t algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t cudnn_workspace = 0;
};

class ConvTransposeLayer : public Layer {
 public:
  explicit ConvTransposeLayer(const LayerInit& init) { Create(init); }

  int NumTactics() const override { return empty_ ? 1 : static_cast<int>(tactics_.size()); }
  void SetTactic(int tactic) override {
    if (empty_) return;
    KILN_CHECK(tactic >= 0 && tactic < static_cast<int>(tactics_.size()), "ConvTranspose tactic ",
               tactic, " out of range [0, ", tactics_.size(), ")");
    current_ = tactic;
    KILN_CUDNN_CHECK(
        cudnnSetConvolutionMathType(conv_desc_.get(), tactics_[static_cast<size_t>(current_)].math));
  }
  std::string TacticName() const override {
    if (empty_) return "empty";
    const ConvTransposeTactic& t = tactics_[static_cast<size_t>(current_)];
    return StrCat("dgrad_", BwdDataAlgoName(t.algo), "/", MathName(t.math), crop_ ? "/crop" : "");
  }
  size_t WorkspaceBytes() const override {
    if (empty_) return 0;
    return AlignUp(tactics_[static_cast<size_t>(current_)].cudnn_workspace) + AlignUp(full_bytes_);
  }
  int KernelLaunches() const override {
    if (empty_) return 0;
    return 1 + (crop_ ? 1 : 0) + (has_bias_ ? 1 : 0);
  }

  void Enqueue(const LaunchArgs& args) const override {
    if (empty_) return;
    const ConvTransposeTactic& t = tactics_[static_cast<size_t>(current_)];
    char* ws = static_cast<char*>(args.workspace);
    void* cudnn_ws = t.cudnn_workspace ? ws : nullptr;
    void* y = args.outputs[0];
    void* dx = crop_ ? ws + AlignUp(t.cudnn_workspace) : y;
    cudnnHandle_t handle = args.handles.cudnn;
    KILN_CUDNN_CHECK(cudnnSetStream(handle, args.stream));
    const float one = 1.f, zero = 0.f;
    KILN_CUDNN_CHECK(cudnnConvolutionBackwardData(handle, &one, w_desc_.get(), args.inputs[1],
                                                  x_desc_.get(), args.inputs[0], conv_desc_.get(),
                                                  t.algo, cudnn_ws, t.cudnn_workspace, &zero,
                                                  dx_desc_.get(), dx));
    if (crop_) LaunchPadCopy(dx, y, crop_params_, DTypeSize(dtype_), args.stream);
    if (has_bias_)
      LaunchBiasResidualActivation(y, args.inputs[2], nullptr, y_count_, channels_, inner_,
                                   dtype_, NnActivation::kNone, 0.f, 0.f, args.stream);
  }

 private:
  void Create(const LayerInit& init) {
    KILN_LAYER_CHECK(init, init.inputs.size() >= 2 && init.inputs.size() <= 3 &&
                               init.inputs[0].defined() && init.inputs[1].defined(),
                     "needs inputs X, W and optionally B");
    KILN_LAYER_CHECK(init, init.outputs.size() == 1, "needs exactly one output");
    const TensorDesc& xd = init.inputs[0];
    const TensorDesc& wd = init.inputs[1];
    const TensorDesc& yd = init.outputs[0];
    dtype_ = xd.dtype;
    KILN_LAYER_CHECK(init, IsConvFloat(dtype_), "dtype ", DTypeName(dtype_),
                     " is not supported (float32, float16, bfloat16)");
    KILN_LAYER_CHECK(init, wd.dtype == dtype_ && yd.dtype == dtype_, "W and Y must have X's dtype");
    for (const TensorDesc* d : {&xd, &wd, &yd})
      KILN_LAYER_CHECK(init, d->layout == Layout::kRowMajor, "only row-major tensors, got ",
                       d->ToString());
    const int rank = xd.rank();
    KILN_LAYER_CHECK(init, rank >= 3 && rank <= 5, "X ", xd.ToString(),
                     " must have 1 to 3 spatial dims");
    KILN_LAYER_CHECK(init, wd.rank() == rank && yd.rank() == rank, "W and Y must have X's rank");
    const int64_t group = init.node.attrs.GetInt("group", 1);
    const int64_t n = xd.dims[0], c_in = xd.dims[1], c_out = wd.dims[1] * group;
    KILN_LAYER_CHECK(init, group >= 1 && wd.dims[0] == c_in && c_in % group == 0, "X ",
                     xd.ToString(), " and W ", wd.ToString(), " do not match group ", group);
    has_bias_ = init.inputs.size() > 2 && init.inputs[2].defined();
    if (has_bias_) {
      const TensorDesc& b = init.inputs[2];
      KILN_LAYER_CHECK(init, b.dtype == dtype_ && b.rank() == 1 && b.dims[0] == c_out, "bias ",
                       b.ToString(), " must be ", DTypeName(dtype_), "[", c_out, "]");
    }
    nn::WindowGeometry g =
        nn::ComputeConvTransposeGeometry(init.node.attrs, Spatial(xd.dims), Spatial(wd.dims));
    std::vector<int64_t> expected = {n, c_out};
    expected.insert(expected.end(), g.output.begin(), g.output.end());
    KILN_LAYER_CHECK(init, expected == yd.dims, "output ", yd.ToString(), " differs from ",
                     DimsToString(expected));
    y_count_ = yd.numel();
    channels_ = c_out;
    inner_ = Numel(Spatial(yd.dims));
    if (y_count_ == 0) {
      empty_ = true;
      return;
    }
    KILN_LAYER_CHECK(init, xd.numel() > 0 && wd.numel() > 0, "empty X or W with a non-empty Y");

    std::vector<int64_t> x_dims = Promote1D(xd.dims), w_dims = Promote1D(wd.dims),
                         y_dims = Promote1D(yd.dims);
    std::vector<int64_t> pb = g.pads_begin, pe = g.pads_end, st = g.strides, dl = g.dilations,
                         kernel = g.kernel;
    if (rank == 3) {
      pb.insert(pb.begin(), 0);
      pe.insert(pe.begin(), 0);
      st.insert(st.begin(), 1);
      dl.insert(dl.begin(), 1);
      kernel.insert(kernel.begin(), 1);
    }
    // Direct when cuDNN's symmetric padding reproduces ONNX's output: the
    // forward convolution of Y's dims must give X's dims.
    bool direct = true;
    for (size_t i = 0; i < pb.size(); ++i) {
      const int64_t window = dl[i] * (kernel[i] - 1) + 1;
      const int64_t span = y_dims[2 + i] + 2 * pb[i] - window;
      direct &= pb[i] == pe[i] && pb[i] >= 0 && span >= 0 && span / st[i] + 1 == x_dims[2 + i];
    }
    std::vector<int64_t> dx_dims = y_dims;
    std::vector<int64_t> conv_pads = pb;
    if (!direct) {
      // Compute the uncropped result (pads 0), then crop/extend into Y.
      crop_ = true;
      std::vector<int64_t> begin(y_dims.size(), 0);
      for (size_t i = 0; i < pb.size(); ++i) {
        const int64_t window = dl[i] * (kernel[i] - 1) + 1;
        dx_dims[2 + i] = st[i] * (x_dims[2 + i] - 1) + window;
        conv_pads[i] = 0;
        begin[2 + i] = -pb[i];  // y[o] = full[o + pads_begin].
      }
      crop_params_ = MakePadCopy(dx_dims, y_dims, begin, Layout::kRowMajor);
      full_bytes_ = static_cast<size_t>(Numel(dx_dims)) * DTypeSize(dtype_);
    }
    SetTensor(init, x_desc_, dtype_, x_dims, Layout::kRowMajor);
    SetTensor(init, dx_desc_, dtype_, dx_dims, Layout::kRowMajor);
    SetFilter(init, w_desc_, dtype_, w_dims, Layout::kRowMajor);
    std::vector<int> p32 = ToInts(init, conv_pads, "pad"), s32 = ToInts(init, st, "stride"),
                     d32 = ToInts(init, dl, "dilation");
    KILN_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(conv_desc_.get(), static_cast<int>(p32.size()),
                                                     p32.data(), s32.data(), d32.data(),
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    KILN_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_desc_.get(), ToInt(init, group, "group")));
    const cudnnMathType_t initial = InitialMath(dtype_, init.precision.tf32);
    KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_.get(), initial));

    cudnnHandle_t handle = init.handles.cudnn;
    KILN_LAYER_CHECK(init, handle != nullptr, "needs a cuDNN handle");
    int max_count = 0;
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &max_count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(std::max(max_count, 1)));
    int returned = 0;
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        handle, w_desc_.get(), x_desc_.get(), conv_desc_.get(), dx_desc_.get(),
        static_cast<int>(perf.size()), &returned, perf.data()));
    for (int i = 0; i < returned; ++i) {
      const cudnnConvolutionBwdDataAlgoPerf_t& p = perf[static_cast<size_t>(i)];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      ConvTransposeTactic t;
      t.algo = p.algo;
      if (!AcceptMath(dtype_, init.precision.tf32, p.mathType, &t.math)) continue;
      bool duplicate = false;
      for (const ConvTransposeTactic& f : tactics_) duplicate |= f.algo == t.algo && f.math == t.math;
      if (duplicate) continue;
      if (cudnnSetConvolutionMathType(conv_desc_.get(), t.math) != CUDNN_STATUS_SUCCESS) continue;
      size_t bytes = 0;
      if (cudnnGetConvolutionBackwardDataWorkspaceSize(handle, w_desc_.get(), x_desc_.get(),
                                                       conv_desc_.get(), dx_desc_.get(), t.algo,
                                                       &bytes) != CUDNN_STATUS_SUCCESS)
        continue;
      t.cudnn_workspace = std::max(bytes, p.memory);
      if (t.cudnn_workspace > kMaxConvWorkspace) continue;
      tactics_.push_back(t);
    }
    KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_.get(), initial));
    std::sort(tactics_.begin(), tactics_.end(),
              [](const ConvTransposeTactic& a, const ConvTransposeTactic& b) {
                if (a.algo != b.algo) return a.algo < b.algo;
                return a.math < b.math;
              });
    KILN_LAYER_CHECK(init, !tactics_.empty(),
                     "cuDNN reports no supported backward-data algorithm for X ", xd.ToString(),
                     ", W ", wd.ToString(), " (group ", group, ", ", DTypeName(dtype_), ")");
    SetTactic(0);
  }

  DType dtype_ = DType::kUndefined;
  bool has_bias_ = false;
  bool empty_ = false;
  bool crop_ = false;
  PadCopyParams crop_params_;
  size_t full_bytes_ = 0;
  int64_t y_count_ = 0, channels_ = 1, inner_ = 1;
  TensorDescriptor x_desc_;   // The ConvTranspose input (cuDNN's dy).
  TensorDescriptor dx_desc_;  // Y, or the uncropped result in the workspace.
  FilterDescriptor w_desc_;
  ConvDescriptor conv_desc_;
  std::vector<ConvTransposeTactic> tactics_;
  int current_ = 0;
};

}  // namespace

void RegisterNnGpuLayers(GpuLayerRegistry& registry) {
  auto conv = [](const LayerInit& init) -> std::unique_ptr<Layer> {
    return std::make_unique<ConvLayer>(init);
  };
  registry.Register({"Conv", conv, /*accepts_nhwc=*/true});
  registry.Register({"KilnConv", conv, /*accepts_nhwc=*/true});
  registry.Register({"ConvTranspose",
                     [](const LayerInit& init) -> std::unique_ptr<Layer> {
                       return std::make_unique<ConvTransposeLayer>(init);
                     },
                     /*accepts_nhwc=*/false});
  RegisterGemmGpuLayers(registry);
  RegisterConvPoolGpuLayers(registry);
}

}  // namespace kiln::gpu
