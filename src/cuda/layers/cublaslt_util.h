// cuBLASLt matrix products shared by the GEMM layers (gemm.cc) and the
// 1x1-convolution GEMM tactic (conv.cc): descriptors, heuristic algorithms as
// tactics, alignment preferences and the launch. Host C++ only.
#pragma once

#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/layer.h"
#include "cuda/library_check.h"

namespace kiln::gpu {

inline constexpr size_t kMaxGemmWorkspace = size_t{32} << 20;  // 32 MiB.
inline constexpr int kMaxGemmTactics = 16;  // Heuristic candidates timed per product.

inline cudaDataType_t CudaType(DType d) {
  switch (d) {
    case DType::kFloat32: return CUDA_R_32F;
    case DType::kFloat16: return CUDA_R_16F;
    case DType::kBFloat16: return CUDA_R_16BF;
    default: Fail("cuBLASLt GEMM does not support dtype ", DTypeName(d));
  }
}

// ---- RAII cuBLASLt descriptors ----

struct MatmulDescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* d) const { cublasLtMatmulDescDestroy(d); }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayoutOpaque_t* d) const { cublasLtMatrixLayoutDestroy(d); }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* d) const { cublasLtMatmulPreferenceDestroy(d); }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, MatmulDescDeleter>;
using MatrixLayout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;
using MatmulPreference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter>;

// One row-major matrix product, repeated over a batch:
//   Y[m, n] = alpha * op(A)[m, k] op(B)[k, n] + beta * C[m, n]
// where op(A) = A (stored [m, k], leading dim lda) or A^T (stored [k, m]),
// likewise B. A batch is either strided (batch, stride_* in elements, 0 for
// no batch) or, when `loop` is non-empty, one launch per entry with the
// given element offsets of A, B and Y (broadcasting batch dims).
struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldy = 0;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_y = 0;
  std::vector<std::array<int64_t, 3>> loop;
};

enum class Epilogue { kDefault, kBias, kRelu, kReluBias, kGelu, kGeluBias };

inline cublasLtEpilogue_t LtEpilogue(Epilogue e) {
  switch (e) {
    case Epilogue::kDefault: return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::kBias: return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::kRelu: return CUBLASLT_EPILOGUE_RELU;
    case Epilogue::kReluBias: return CUBLASLT_EPILOGUE_RELU_BIAS;
    case Epilogue::kGelu: return CUBLASLT_EPILOGUE_GELU;
    case Epilogue::kGeluBias: return CUBLASLT_EPILOGUE_GELU_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

inline bool EpilogueHasBias(Epilogue e) {
  return e == Epilogue::kBias || e == Epilogue::kReluBias || e == Epilogue::kGeluBias;
}

// Largest power of two <= 256 dividing every byte offset.
inline uint32_t AlignmentOf(const std::vector<int64_t>& element_offsets, size_t elem_size) {
  uint64_t align = 256;
  for (int64_t e : element_offsets) {
    const uint64_t bytes = static_cast<uint64_t>(e) * elem_size;
    while (align > 1 && bytes % align != 0) align /= 2;
  }
  return static_cast<uint32_t>(align);
}

// The cuBLASLt side of one GemmShape: descriptors, heuristic tactics and the
// launch. C, when used, has D's layout and dtype (Y itself or a full [m, n]
// input), as does the bias. A and B have `dtype`; D has `out_dtype`
// (kUndefined: `dtype`), float32 allowed for 16-bit A and B.
class LtGemm {
 public:
  void Init(const LayerInit& init, DType dtype, const GemmShape& shape, float alpha, float beta,
            Epilogue epilogue, DType out_dtype = DType::kUndefined) {
    shape_ = shape;
    dtype_ = dtype;
    out_dtype = out_dtype == DType::kUndefined ? dtype : out_dtype;
    KILN_LAYER_CHECK(init, out_dtype == dtype || out_dtype == DType::kFloat32,
                     "a ", DTypeName(dtype), " product can write ", DTypeName(dtype),
                     " or float32, not ", DTypeName(out_dtype));
    alpha_ = alpha;
    beta_ = beta;
    epilogue_ = epilogue;
    elem_size_ = DTypeSize(dtype);
    out_elem_size_ = DTypeSize(out_dtype);
    if (shape.m == 0 || shape.n == 0 || shape.batch == 0) {
      empty_ = true;
      return;
    }
    KILN_LAYER_CHECK(init, shape.k > 0, "a matrix product with inner dimension 0 is not supported");
    cublasLtHandle_t handle = init.handles.cublaslt;
    KILN_LAYER_CHECK(init, handle != nullptr, "needs a cuBLASLt handle");

    const cudaDataType_t type = CudaType(dtype);
    const cublasComputeType_t compute = dtype == DType::kFloat32 && init.precision.tf32
                                            ? CUBLAS_COMPUTE_32F_FAST_TF32
                                            : CUBLAS_COMPUTE_32F;
    cublasLtMatmulDesc_t desc = nullptr;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
    desc_.reset(desc);
    // cuBLASLt's A is our B, its B our A (see the file comment).
    const cublasOperation_t op_lt_a = shape.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_lt_b = shape.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a,
                                                     sizeof(op_lt_a)));
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b,
                                                     sizeof(op_lt_b)));
    const cublasLtEpilogue_t epi = LtEpilogue(epilogue);
    KILN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));

    // Stored (pre-op) column-major shapes.
    const uint64_t lt_a_rows = static_cast<uint64_t>(shape.trans_b ? shape.k : shape.n);
    const uint64_t lt_a_cols = static_cast<uint64_t>(shape.trans_b ? shape.n : shape.k);
    const uint64_t lt_b_rows = static_cast<uint64_t>(shape.trans_a ? shape.m : shape.k);
    const uint64_t lt_b_cols = static_cast<uint64_t>(shape.trans_a ? shape.k : shape.m);
    const int64_t batch = shape.loop.empty() ? shape.batch : 1;
    lt_a_ = MakeLayout(type, lt_a_rows, lt_a_cols, shape.ldb, batch, shape.stride_b);
    lt_b_ = MakeLayout(type, lt_b_rows, lt_b_cols, shape.lda, batch, shape.stride_a);
    lt_d_ = MakeLayout(CudaType(out_dtype), static_cast<uint64_t>(shape.n),
                       static_cast<uint64_t>(shape.m), shape.ldy, batch, shape.stride_y);

    // Alignment the pointers will have: base pointers are 256-byte aligned;
    // batch strides and loop offsets may lower it.
    std::vector<int64_t> a_offsets = {shape.stride_a}, b_offsets = {shape.stride_b},
                         y_offsets = {shape.stride_y};
    for (const auto& o : shape.loop) {
      a_offsets.push_back(o[0]);
      b_offsets.push_back(o[1]);
      y_offsets.push_back(o[2]);
    }
    const uint32_t align_lt_a = AlignmentOf(b_offsets, elem_size_);
    const uint32_t align_lt_b = AlignmentOf(a_offsets, elem_size_);
    const uint32_t align_d = AlignmentOf(y_offsets, out_elem_size_);

    cublasLtMatmulPreference_t pref = nullptr;
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    MatmulPreference pref_holder(pref);
    const uint64_t max_ws = kMaxGemmWorkspace;
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof(max_ws)));
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_lt_a, sizeof(align_lt_a)));
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_lt_b, sizeof(align_lt_b)));
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));

    std::vector<cublasLtMatmulHeuristicResult_t> results(kMaxGemmTactics);
    int returned = 0;
    KILN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc, lt_a_.get(), lt_b_.get(),
                                                     lt_d_.get(), lt_d_.get(), pref,
                                                     kMaxGemmTactics, results.data(), &returned));
    for (int i = 0; i < returned; ++i) {
      const cublasLtMatmulHeuristicResult_t& r = results[static_cast<size_t>(i)];
      if (r.state != CUBLAS_STATUS_SUCCESS || r.workspaceSize > kMaxGemmWorkspace) continue;
      tactics_.push_back(r);
    }
    AddSplitKVariants(handle);
    KILN_LAYER_CHECK(init, !tactics_.empty(), "cuBLASLt has no algorithm for m=", shape.m,
                     " n=", shape.n, " k=", shape.k, " batch=", shape.batch, " (",
                     DTypeName(dtype), ")");
  }

  bool empty() const { return empty_; }
  int NumTactics() const { return empty_ ? 1 : static_cast<int>(tactics_.size()); }
  void SetTactic(int tactic) {
    if (empty_) return;
    KILN_CHECK(tactic >= 0 && tactic < static_cast<int>(tactics_.size()), "GEMM tactic ", tactic,
               " out of range [0, ", tactics_.size(), ")");
    current_ = tactic;
  }
  std::string TacticName() const {
    if (empty_) return "empty";
    const cublasLtMatmulAlgo_t& algo = tactics_[static_cast<size_t>(current_)].algo;
    auto attr = [&](cublasLtMatmulAlgoConfigAttributes_t a) -> int64_t {
      uint32_t v = 0;
      size_t written = 0;
      if (cublasLtMatmulAlgoConfigGetAttribute(&algo, a, &v, sizeof(v), &written) !=
          CUBLAS_STATUS_SUCCESS)
        return -1;
      return v;
    };
    const int64_t splits = attr(CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
    return StrCat("lt_algo", attr(CUBLASLT_ALGO_CONFIG_ID), "_tile", attr(CUBLASLT_ALGO_CONFIG_TILE_ID),
                  "_stages", attr(CUBLASLT_ALGO_CONFIG_STAGES_ID), "_splitk", splits,
                  splits > 1 ? StrCat("_red", attr(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME)) : "",
                  "#", current_);
  }
  size_t WorkspaceBytes() const {
    return empty_ ? 0 : tactics_[static_cast<size_t>(current_)].workspaceSize;
  }
  int Launches() const {
    if (empty_) return 0;
    return shape_.loop.empty() ? 1 : static_cast<int>(shape_.loop.size());
  }

  // c: the C matrix (D's layout) when beta != 0, else ignored.
  void Run(const LaunchArgs& args, const void* a, const void* b, const void* c, void* y,
           const void* bias) const {
    if (empty_) return;
    if (EpilogueHasBias(epilogue_)) {
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
          desc_.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    const cublasLtMatmulHeuristicResult_t& t = tactics_[static_cast<size_t>(current_)];
    const char* ap = static_cast<const char*>(a);
    const char* bp = static_cast<const char*>(b);
    const char* cp = static_cast<const char*>(beta_ != 0.f ? c : y);
    char* yp = static_cast<char*>(y);
    auto launch = [&](int64_t oa, int64_t ob, int64_t oy) {
      KILN_CUBLAS_CHECK(cublasLtMatmul(
          args.handles.cublaslt, desc_.get(), &alpha_, bp + ob * static_cast<int64_t>(elem_size_),
          lt_a_.get(), ap + oa * static_cast<int64_t>(elem_size_), lt_b_.get(), &beta_,
          cp + oy * static_cast<int64_t>(out_elem_size_), lt_d_.get(),
          yp + oy * static_cast<int64_t>(out_elem_size_), lt_d_.get(), &t.algo,
          t.workspaceSize ? args.workspace : nullptr, t.workspaceSize, args.stream));
    };
    if (shape_.loop.empty()) {
      launch(0, 0, 0);
    } else {
      for (const auto& o : shape_.loop) launch(o[0], o[1], o[2]);
    }
  }

 private:
  // Split-K versions of the heuristic's first algorithms, for products whose
  // output has too few tiles to fill the GPU (BERT at batch 1: 128 rows of
  // 768-3072 columns is 6-24 tiles of 128x128 on 132 SMs) but a long K: each
  // split is another CTA. cuBLASLt's heuristic rarely offers them, and the
  // weight-read-bound small-batch products are 2-3x faster split (measured
  // per layer with `kiln bench --profile`). cublasLtMatmulAlgoCheck vets each
  // variant; timing picks among them and the originals.
  void AddSplitKVariants(cublasLtHandle_t handle) {
    constexpr int64_t kTile = 128, kFewTiles = 264;  // Two CTAs per SM on an H100/H200.
    const int64_t tiles = ((shape_.m + kTile - 1) / kTile) * ((shape_.n + kTile - 1) / kTile) *
                          (shape_.loop.empty() ? shape_.batch : 1);
    if (tiles >= kFewTiles || shape_.k < 512) return;
    const size_t heuristic = std::min<size_t>(tactics_.size(), 3);
    for (size_t i = 0; i < heuristic; ++i) {
      const cublasLtMatmulAlgo_t base = tactics_[i].algo;
      int32_t supported = 0;
      uint32_t schemes = 0;
      size_t written = 0;
      if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &supported,
                                            sizeof(supported), &written) != CUBLAS_STATUS_SUCCESS ||
          !supported)
        continue;
      if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK,
                                            &schemes, sizeof(schemes),
                                            &written) != CUBLAS_STATUS_SUCCESS)
        continue;
      for (uint32_t splits : {2u, 3u, 4u, 6u, 8u}) {
        if (shape_.k / splits < 128) break;
        for (cublasLtReductionScheme_t scheme :
             {CUBLASLT_REDUCTION_SCHEME_INPLACE, CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE}) {
          if (!(schemes & static_cast<uint32_t>(scheme))) continue;
          cublasLtMatmulHeuristicResult_t variant{};
          variant.algo = base;
          const uint32_t scheme_value = static_cast<uint32_t>(scheme);
          if (cublasLtMatmulAlgoConfigSetAttribute(&variant.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                   &splits, sizeof(splits)) !=
                  CUBLAS_STATUS_SUCCESS ||
              cublasLtMatmulAlgoConfigSetAttribute(&variant.algo,
                                                   CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                   &scheme_value, sizeof(scheme_value)) !=
                  CUBLAS_STATUS_SUCCESS)
            continue;
          if (cublasLtMatmulAlgoCheck(handle, desc_.get(), lt_a_.get(), lt_b_.get(), lt_d_.get(),
                                      lt_d_.get(), &variant.algo, &variant) != CUBLAS_STATUS_SUCCESS ||
              variant.state != CUBLAS_STATUS_SUCCESS || variant.workspaceSize > kMaxGemmWorkspace)
            continue;
          const bool duplicate = std::any_of(tactics_.begin(), tactics_.end(), [&](const auto& t) {
            return std::memcmp(&t.algo, &variant.algo, sizeof(variant.algo)) == 0;
          });
          if (!duplicate) tactics_.push_back(variant);
        }
      }
    }
  }

  static MatrixLayout MakeLayout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld,
                                 int64_t batch, int64_t stride) {
    cublasLtMatrixLayout_t layout = nullptr;
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld));
    MatrixLayout holder(layout);
    if (batch > 1) {
      const int32_t count = static_cast<int32_t>(batch);
      KILN_CHECK(count == batch, "GEMM batch ", batch, " too large");
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                         &count, sizeof(count)));
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
          layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
    return holder;
  }

  GemmShape shape_;
  DType dtype_ = DType::kUndefined;
  size_t elem_size_ = 0, out_elem_size_ = 0;  // Of A/B and of C/D.
  float alpha_ = 1.f, beta_ = 0.f;
  Epilogue epilogue_ = Epilogue::kDefault;
  bool empty_ = false;
  MatmulDesc desc_;
  MatrixLayout lt_a_, lt_b_, lt_d_;
  std::vector<cublasLtMatmulHeuristicResult_t> tactics_;
  int current_ = 0;
};

}  // namespace kiln::gpu
