// KilnPadSpaceToDepth: the builder's fused zero-pad + SpaceToDepth (+ float
// cast, + channels-last output) node (src/builder/conv_space_to_depth.h), one
// kernel (src/cuda/kernels/space_to_depth.cu). Its input is row-major (so
// GpuOpDef::accepts_nhwc stays false); its output is row-major or NHWC, as
// the builder's layout map describes it.
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

std::unique_ptr<Layer> MakePadSpaceToDepth(const LayerInit& init) {
  KILN_LAYER_CHECK(init, init.inputs.size() == 1 && init.inputs[0].defined(),
                   "needs exactly one input");
  KILN_LAYER_CHECK(init, init.outputs.size() == 1 && init.outputs[0].defined(),
                   "needs exactly one output");
  const TensorDesc& in = init.inputs[0];
  const TensorDesc& out = init.outputs[0];
  KILN_LAYER_CHECK(init, in.rank() == 4 && in.layout == Layout::kRowMajor,
                   "input must be a row-major 4-D tensor, got ", in.ToString());
  KILN_LAYER_CHECK(init, out.rank() == 4, "output must be 4-D, got ", out.ToString());
  KILN_LAYER_CHECK(init, sk::PadSpaceToDepthSupported(in.dtype, out.dtype), "cannot convert ",
                   DTypeName(in.dtype), " to ", DTypeName(out.dtype),
                   " (float32, float16 and bfloat16 only)");
  const ir::Attributes& attrs = init.node.attrs;
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
  p.c = in.dims[1];
  p.h = in.dims[2];
  p.w = in.dims[3];
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

}  // namespace

void RegisterSpaceToDepthGpuLayers(GpuLayerRegistry& registry) {
  registry.Register({"KilnPadSpaceToDepth", MakePadSpaceToDepth, false});
}

}  // namespace kiln::gpu
