// KilnPadSpaceToDepth: the builder's fused zero-pad + SpaceToDepth (+ float
// cast, + channels-last output) node (src/builder/conv_space_to_depth.h), one
// kernel (src/cuda/kernels/space_to_depth.cu). Its input is row-major (so
// GpuOpDef::accepts_nhwc stays false): float NCHW, or uint8 NHWC images with
// the `mean`/`std` attributes (an engine's image input normalized in the same
// pass); its output is row-major or NHWC, as the builder's layout map
// describes it.
//
// KilnNormalizeImage (src/ops/image.cc): uint8 [N,H,W,C] images -> float
// [N,C,H,W], where no stem absorbs it; the pipeline's normalize kernel
// (src/cuda/kernels/normalize_image.cu).
#include "cuda/kernels/normalize_image.h"
#include "cuda/kernels/space_to_depth.h"

#include <memory>
#include <string>
#include <vector>

#include "cuda/layer.h"

namespace kiln::gpu {

void RegisterSpaceToDepthGpuLayers(GpuLayerRegistry& registry);

namespace {

namespace sk = space_to_depth_kernels;

class PadSpaceToDepthLayer final : public Layer {
 public:
  PadSpaceToDepthLayer(sk::PadSpaceToDepthParams params, DType in_dtype, DType out_dtype,
                       bool empty)
      : params_(params), in_dtype_(in_dtype), out_dtype_(out_dtype), empty_(empty) {}

  void Enqueue(const LaunchArgs& args) const override {
    if (empty_) return;
    sk::LaunchPadSpaceToDepth(args.inputs[0], in_dtype_, args.outputs[0], out_dtype_, params_,
                              args.stream);
  }
  int KernelLaunches() const override { return empty_ ? 0 : 1; }

 private:
  sk::PadSpaceToDepthParams params_;
  DType in_dtype_, out_dtype_;
  bool empty_;
};

// Both layers here read one input and write one output.
void CheckOneInputOneOutput(const LayerInit& init) {
  KILN_LAYER_CHECK(init, init.inputs.size() == 1 && init.inputs[0].defined(),
                   "needs exactly one input");
  KILN_LAYER_CHECK(init, init.outputs.size() == 1 && init.outputs[0].defined(),
                   "needs exactly one output");
}

std::unique_ptr<Layer> MakePadSpaceToDepth(const LayerInit& init) {
  CheckOneInputOneOutput(init);
  const TensorDesc& in = init.inputs[0];
  const TensorDesc& out = init.outputs[0];
  KILN_LAYER_CHECK(init, in.rank() == 4 && in.layout == Layout::kRowMajor,
                   "input must be a row-major 4-D tensor, got ", in.ToString());
  KILN_LAYER_CHECK(init, out.rank() == 4, "output must be 4-D, got ", out.ToString());
  KILN_LAYER_CHECK(init, sk::PadSpaceToDepthSupported(in.dtype, out.dtype), "cannot convert ",
                   DTypeName(in.dtype), " to ", DTypeName(out.dtype),
                   " (float32, float16 and bfloat16, or uint8 images to those)");
  const ir::Attributes& attrs = init.node.attrs;
  const bool images = in.dtype == DType::kUInt8;
  KILN_LAYER_CHECK(init, images == (attrs.has("mean") && attrs.has("std")),
                   images ? "uint8 images need the mean and std attributes"
                          : "mean/std attributes need a uint8 image input, got ",
                   images ? "" : in.ToString());
  KILN_LAYER_CHECK(init, attrs.has("pads") && attrs.has("blocksize"),
                   "needs the pads and blocksize attributes");
  const std::vector<int64_t> pads = attrs.GetInts("pads");
  const int64_t block = attrs.GetInt("blocksize");
  KILN_LAYER_CHECK(init, pads.size() == 8, "pads must have 8 entries, got ", DimsToString(pads));
  for (int64_t p : pads) KILN_LAYER_CHECK(init, p >= 0, "negative pads ", DimsToString(pads));
  KILN_LAYER_CHECK(init, pads[0] == 0 && pads[4] == 0, "pads ", DimsToString(pads),
                   " pad the batch axis");
  KILN_LAYER_CHECK(init, block >= 1, "blocksize must be positive, got ", block);

  sk::PadSpaceToDepthParams p;
  p.n = in.dims[0];
  if (images) {  // [N, H, W, C]
    p.h = in.dims[1];
    p.w = in.dims[2];
    p.c = in.dims[3];
    p.normalize = MakeNormalizeImageParams(attrs.GetFloats("mean"), attrs.GetFloats("std"), p.c,
                                           init.node.Describe().c_str());
  } else {
    p.c = in.dims[1];
    p.h = in.dims[2];
    p.w = in.dims[3];
  }
  p.pad_c = pads[1];
  p.pad_h = pads[2];
  p.pad_w = pads[3];
  p.padded_c = p.c + pads[1] + pads[5];
  const int64_t padded_h = p.h + pads[2] + pads[6], padded_w = p.w + pads[3] + pads[7];
  KILN_LAYER_CHECK(init, padded_h % block == 0 && padded_w % block == 0, "padded size ", padded_h,
                   "x", padded_w, " is not divisible by blocksize ", block);
  p.block = block;
  p.out_c = p.padded_c * block * block;
  p.out_h = padded_h / block;
  p.out_w = padded_w / block;
  p.out_nhwc = out.layout == Layout::kNHWC;
  const std::vector<int64_t> expected = {p.n, p.out_c, p.out_h, p.out_w};
  KILN_LAYER_CHECK(init, out.dims == expected, "output ", out.ToString(), " differs from the ",
                   DimsToString(expected), " that pads ", DimsToString(pads), " and blocksize ",
                   block, " give for ", in.ToString());
  return std::make_unique<PadSpaceToDepthLayer>(p, in.dtype, out.dtype, out.numel() == 0);
}

class NormalizeImageLayer final : public Layer {
 public:
  NormalizeImageLayer(NormalizeImageParams params, std::vector<int64_t> nhwc, DType out_dtype)
      : params_(params), nhwc_(std::move(nhwc)), out_dtype_(out_dtype) {}

  void Enqueue(const LaunchArgs& args) const override {
    LaunchNormalizeImages(static_cast<const uint8_t*>(args.inputs[0]), args.outputs[0], out_dtype_,
                          nhwc_[0], nhwc_[3], nhwc_[1], nhwc_[2], params_, args.stream);
  }
  int KernelLaunches() const override { return nhwc_[0] * nhwc_[1] * nhwc_[2] > 0 ? 1 : 0; }

 private:
  NormalizeImageParams params_;
  std::vector<int64_t> nhwc_;
  DType out_dtype_;
};

std::unique_ptr<Layer> MakeNormalizeImage(const LayerInit& init) {
  CheckOneInputOneOutput(init);
  const TensorDesc& in = init.inputs[0];
  const TensorDesc& out = init.outputs[0];
  KILN_LAYER_CHECK(init, in.dtype == DType::kUInt8 && in.rank() == 4 && in.layout == Layout::kRowMajor,
                   "input must be row-major uint8 images [N,H,W,C], got ", in.ToString());
  KILN_LAYER_CHECK(init,
                   (out.dtype == DType::kFloat32 || out.dtype == DType::kFloat16 ||
                    out.dtype == DType::kBFloat16) &&
                       out.layout == Layout::kRowMajor,
                   "output must be row-major float32/float16/bfloat16, got ", out.ToString());
  const std::vector<int64_t> expected = {in.dims[0], in.dims[3], in.dims[1], in.dims[2]};
  KILN_LAYER_CHECK(init, out.dims == expected, "output ", out.ToString(), " is not the [N,C,H,W] ",
                   DimsToString(expected), " of ", in.ToString());
  const ir::Attributes& attrs = init.node.attrs;
  KILN_LAYER_CHECK(init, attrs.has("mean") && attrs.has("std"), "needs the mean and std attributes");
  NormalizeImageParams params = MakeNormalizeImageParams(
      attrs.GetFloats("mean"), attrs.GetFloats("std"), in.dims[3], init.node.Describe().c_str());
  return std::make_unique<NormalizeImageLayer>(params, in.dims, out.dtype);
}

}  // namespace

void RegisterSpaceToDepthGpuLayers(GpuLayerRegistry& registry) {
  registry.Register({"KilnPadSpaceToDepth", MakePadSpaceToDepth, false});
  registry.Register({"KilnNormalizeImage", MakeNormalizeImage, false});
}

}  // namespace kiln::gpu
