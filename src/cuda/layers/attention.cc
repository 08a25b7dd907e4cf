// KilnAttention: the builder's fused multi-head attention
// (builder/fuse_attention.h documents the node): softmax(Q K^T * scale +
// mask) V per (batch, head) in one flash-attention kernel
// (kernels/attention.cu) that reads heads by stride from [b, s, h*d]
// projections (or one packed [b, s, 3*h*d] QKV projection, attribute
// packed_qkv) and writes [b, s, h*d], so no head transposes run and the
// [b, h, s, s] scores never reach global memory.
//
// Tactics (the builder times them and keeps the fastest):
//   0 flash_wmma_64x64          WMMA, S and O through shared memory
//   1 flash_mma_m16n8k16        mma.sync, Q/S/P/O in registers (FlashAttention-2
//                               style, kernels/attention_mma.cu)
//   2 flash_mma_m16n8k16_occ4   the same, registers capped for 4 CTAs per SM
//   3 flash_mma_m16n8k16_w8     8 warps, 128 query rows per CTA (K/V read
//                               once per 128 queries)
//   4 flash_mma_m16n8k16_w8_occ2  the same, registers capped for 2 CTAs per SM
#include "cuda/kernels/attention.h"

#include <memory>
#include <string>
#include <vector>

#include "cuda/layer.h"

namespace kiln::gpu {
namespace {

// [b, s, h*d] (rank 3) or [b, s, h, d] (rank 4) -> {b, s, d}.
struct HeadView {
  int64_t batch = 0, seq = 0, head_dim = 0;
};

HeadView ParseHeads(const LayerInit& init, const TensorDesc& d, int64_t heads, const char* what) {
  KILN_LAYER_CHECK(init, d.defined(), what, " is missing");
  KILN_LAYER_CHECK(init, d.layout == Layout::kRowMajor, what, " must be row-major, got ",
                   d.ToString());
  HeadView v;
  if (d.rank() == 3) {
    KILN_LAYER_CHECK(init, d.dims[2] % heads == 0, what, " ", d.ToString(),
                     ": last dim is not a multiple of num_heads ", heads);
    v = {d.dims[0], d.dims[1], d.dims[2] / heads};
  } else if (d.rank() == 4) {
    KILN_LAYER_CHECK(init, d.dims[2] == heads, what, " ", d.ToString(),
                     ": dim 2 must be num_heads ", heads);
    v = {d.dims[0], d.dims[1], d.dims[3]};
  } else {
    KILN_LAYER_CHECK(init, false, what, " must be [b, s, h*d] or [b, s, h, d], got ", d.ToString());
  }
  return v;
}

// A packed [b, s, 3*h*d] QKV projection (attribute packed_qkv = 1): Q, K
// and V are its three column blocks, read with a row stride of 3*h*d.
HeadView ParsePackedQkv(const LayerInit& init, const TensorDesc& d, int64_t heads) {
  KILN_LAYER_CHECK(init, d.defined() && d.layout == Layout::kRowMajor && d.rank() == 3,
                   "the packed QKV input must be a row-major [b, s, 3*h*d] tensor, got ",
                   d.ToString());
  KILN_LAYER_CHECK(init, d.dims[2] % (3 * heads) == 0, "the packed QKV input ", d.ToString(),
                   ": last dim is not a multiple of 3 * num_heads ", 3 * heads);
  return {d.dims[0], d.dims[1], d.dims[2] / (3 * heads)};
}

class AttentionLayer : public Layer {
 public:
  explicit AttentionLayer(const LayerInit& init) {
    const ir::Attributes& attrs = init.node.attrs;
    packed_ = attrs.GetInt("packed_qkv", 0) != 0;
    const size_t num_qkv = packed_ ? 1 : 3;
    KILN_LAYER_CHECK(init, init.inputs.size() == num_qkv || init.inputs.size() == num_qkv + 1,
                     packed_ ? "expects a packed QKV input and an optional mask, got "
                             : "expects inputs Q, K, V and an optional mask, got ",
                     init.inputs.size());
    KILN_LAYER_CHECK(init, init.outputs.size() == 1, "expects one output, got ",
                     init.outputs.size());
    const int64_t heads = attrs.GetInt("num_heads");
    KILN_LAYER_CHECK(init, heads >= 1, "num_heads must be >= 1, got ", heads);
    dtype_ = init.inputs[0].dtype;
    KILN_LAYER_CHECK(init, dtype_ == DType::kFloat16 || dtype_ == DType::kBFloat16, "dtype ",
                     DTypeName(dtype_), " is not supported (float16 or bfloat16)");
    const HeadView q = packed_ ? ParsePackedQkv(init, init.inputs[0], heads)
                               : ParseHeads(init, init.inputs[0], heads, "Q");
    const HeadView k = packed_ ? q : ParseHeads(init, init.inputs[1], heads, "K");
    const HeadView v = packed_ ? q : ParseHeads(init, init.inputs[2], heads, "V");
    const HeadView o = ParseHeads(init, init.outputs[0], heads, "the output");
    for (size_t i = 1; i <= num_qkv; ++i) {
      const TensorDesc& d = i < num_qkv ? init.inputs[i] : init.outputs[0];
      KILN_LAYER_CHECK(init, d.dtype == dtype_, "Q is ", DTypeName(dtype_), " but ", d.ToString(),
                       " has another dtype");
    }
    KILN_LAYER_CHECK(init, k.batch == q.batch && v.batch == q.batch && o.batch == q.batch,
                     "batch sizes differ between Q, K, V and the output");
    KILN_LAYER_CHECK(
        init, k.head_dim == q.head_dim && v.head_dim == q.head_dim && o.head_dim == q.head_dim,
        "head sizes differ between Q, K, V and the output");
    KILN_LAYER_CHECK(init, v.seq == k.seq, "K has ", k.seq, " positions but V has ", v.seq);
    KILN_LAYER_CHECK(init, o.seq == q.seq, "the output has ", o.seq, " positions but Q has ",
                     q.seq);
    KILN_LAYER_CHECK(init, k.seq >= 1, "K and V need at least one position");
    KILN_LAYER_CHECK(
        init,
        q.head_dim <= 1024 && kernels::AttentionSupports(dtype_, static_cast<int>(q.head_dim)),
        "head size ", q.head_dim, " is not supported (32, 64 or 128)");

    params_.batch = q.batch;
    params_.heads = heads;
    params_.q_len = q.seq;
    params_.kv_len = k.seq;
    params_.head_dim = static_cast<int>(q.head_dim);
    params_.scale = attrs.GetFloat("scale", 1.f);
    if (packed_) {
      params_.in_row_stride = 3 * heads * q.head_dim;
      kv_offset_bytes_ = static_cast<size_t>(heads * q.head_dim) * DTypeSize(dtype_);
    }

    mask_index_ = num_qkv;
    has_mask_ = init.inputs.size() == num_qkv + 1 && init.inputs[mask_index_].defined();
    if (has_mask_) {
      const TensorDesc& m = init.inputs[mask_index_];
      KILN_LAYER_CHECK(init, m.dtype == dtype_, "the mask ", m.ToString(),
                       " must have the dtype of Q (", DTypeName(dtype_), ")");
      KILN_LAYER_CHECK(init, m.layout == Layout::kRowMajor, "the mask must be row-major");
      // Right-aligned against [b, h, sq, sk]: batch 1 or b, heads 1, queries 1, keys sk.
      KILN_LAYER_CHECK(init, m.rank() >= 1 && m.rank() <= 4, "the mask ", m.ToString(),
                       " must broadcast as [b|1, 1, 1, ", k.seq, "]");
      const int offset = 4 - m.rank();
      int64_t mask_batch = 1;
      for (int i = 0; i < m.rank(); ++i) {
        const int axis = offset + i;
        const int64_t d = m.dims[static_cast<size_t>(i)];
        const bool ok = axis == 0 ? (d == 1 || d == q.batch) : axis == 3 ? d == k.seq : d == 1;
        KILN_LAYER_CHECK(init, ok, "the mask ", m.ToString(), " must broadcast as [b|1, 1, 1, ",
                         k.seq, "]");
        if (axis == 0) mask_batch = d;
      }
      params_.mask_batch_stride = mask_batch == 1 ? 0 : k.seq;
    }
    kernels::PrepareAttention(dtype_, params_.head_dim);
    kernels::PrepareAttentionMma(dtype_, params_.head_dim);  // Same dtypes and head dims.
  }

  void Enqueue(const LaunchArgs& args) const override {
    const void* mask = has_mask_ ? args.inputs[mask_index_] : nullptr;
    const void* q = args.inputs[0];
    const void* k = packed_ ? static_cast<const char*>(q) + kv_offset_bytes_ : args.inputs[1];
    const void* v = packed_ ? static_cast<const char*>(q) + 2 * kv_offset_bytes_ : args.inputs[2];
    if (tactic_ == kWmma) {
      kernels::LaunchAttention(dtype_, q, k, v, mask, args.outputs[0], params_, args.stream);
    } else {
      const bool eight_warps = tactic_ == kMma8 || tactic_ == kMma8Capped;
      kernels::LaunchAttentionMma(dtype_, q, k, v, mask, args.outputs[0], params_,
                                  /*cap_registers=*/tactic_ == kMmaCapped || tactic_ == kMma8Capped,
                                  /*warps=*/eight_warps ? 8 : 4, args.stream);
    }
  }

  int NumTactics() const override { return 5; }
  void SetTactic(int tactic) override {
    KILN_CHECK(tactic >= 0 && tactic < NumTactics(), "KilnAttention: tactic ", tactic,
               " out of range [0, ", NumTactics(), ")");
    tactic_ = tactic;
  }
  std::string TacticName() const override {
    switch (tactic_) {
      case kMma: return "flash_mma_m16n8k16";
      case kMmaCapped: return "flash_mma_m16n8k16_occ4";
      case kMma8: return "flash_mma_m16n8k16_w8";
      case kMma8Capped: return "flash_mma_m16n8k16_w8_occ2";
      default: return "flash_wmma_64x64";
    }
  }

 private:
  // Tactic indices (stored in engines).
  static constexpr int kWmma = 0, kMma = 1, kMmaCapped = 2, kMma8 = 3, kMma8Capped = 4;
  int tactic_ = kWmma;
  DType dtype_ = DType::kUndefined;
  bool packed_ = false;           // One [b, s, 3*h*d] QKV input.
  size_t kv_offset_bytes_ = 0;    // Packed: K starts this far into a row, V twice as far.
  size_t mask_index_ = 3;
  bool has_mask_ = false;
  kernels::AttentionParams params_;
};

}  // namespace

void RegisterAttentionGpuLayers(GpuLayerRegistry& registry) {
  registry.Register({"KilnAttention",
                     [](const LayerInit& init) -> std::unique_ptr<Layer> {
                       return std::make_unique<AttentionLayer>(init);
                     },
                     /*accepts_nhwc=*/false});
}

}  // namespace kiln::gpu
