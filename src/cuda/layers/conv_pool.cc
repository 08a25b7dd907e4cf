// KilnConvPool: the builder's fused stem (src/builder/fuse_conv_pool.h), a
// stride-2 convolution on <= 4 channels + bias + ReLU? + 3x3 stride-2 max
// pool in one kernel (src/cuda/kernels/conv_pool.cu). Inputs: X row-major
// float32/float16 NCHW, or uint8 NHWC images with the mean/std attributes;
// W float16 [out_c, PaddedK(kh, kw)] packed by the builder; B float16
// [out_c] or omitted. Output: float16 [N, out_c, PH, PW] stored NHWC. The
// tactics are the kernel's tile sizes.
#include "cuda/kernels/conv_pool.h"

#include <memory>
#include <string>
#include <vector>

#include "cuda/layer.h"

namespace kiln::gpu {

void RegisterConvPoolGpuLayers(GpuLayerRegistry& registry);

namespace {

namespace ck = conv_pool_kernels;

class ConvPoolLayer final : public Layer {
 public:
  ConvPoolLayer(ck::ConvPoolParams params, DType x_dtype, bool has_bias)
      : params_(params), x_dtype_(x_dtype), has_bias_(has_bias) {}

  int NumTactics() const override { return ck::kConvPoolTiles; }
  void SetTactic(int tactic) override {
    KILN_CHECK(tactic >= 0 && tactic < ck::kConvPoolTiles, "conv-pool tactic ", tactic,
               " out of range");
    tile_ = static_cast<ck::ConvPoolTile>(tactic);
  }
  std::string TacticName() const override { return ck::ConvPoolTileName(tile_); }
  void Enqueue(const LaunchArgs& args) const override {
    ck::LaunchConvPool(args.inputs[0], x_dtype_, args.inputs[1],
                       has_bias_ ? args.inputs[2] : nullptr, args.outputs[0], params_, tile_,
                       args.stream);
  }

 private:
  ck::ConvPoolParams params_;
  DType x_dtype_;
  bool has_bias_;
  ck::ConvPoolTile tile_ = ck::ConvPoolTile::k4x8;
};

std::unique_ptr<Layer> MakeConvPool(const LayerInit& init) {
  KILN_LAYER_CHECK(init, init.inputs.size() >= 2 && init.inputs[0].defined() &&
                             init.inputs[1].defined(),
                   "needs X and W");
  KILN_LAYER_CHECK(init, init.outputs.size() == 1 && init.outputs[0].defined(),
                   "needs exactly one output");
  const TensorDesc& x = init.inputs[0];
  const TensorDesc& w = init.inputs[1];
  const bool has_bias = init.inputs.size() > 2 && init.inputs[2].defined();
  const TensorDesc& y = init.outputs[0];
  const ir::Attributes& attrs = init.node.attrs;
  const bool images = x.dtype == DType::kUInt8;
  KILN_LAYER_CHECK(init, x.rank() == 4 && x.layout == Layout::kRowMajor,
                   "X must be a row-major 4-D tensor, got ", x.ToString());
  KILN_LAYER_CHECK(init, images || x.dtype == DType::kFloat32 || x.dtype == DType::kFloat16,
                   "X must be float32, float16 or uint8 images, got ", x.ToString());
  KILN_LAYER_CHECK(init, images == (attrs.has("mean") && attrs.has("std")),
                   images ? "uint8 images need the mean and std attributes"
                          : "mean/std attributes need a uint8 image input");
  KILN_LAYER_CHECK(init, y.rank() == 4 && y.dtype == DType::kFloat16 && y.layout == Layout::kNHWC,
                   "Y must be float16 NHWC, got ", y.ToString());
  KILN_LAYER_CHECK(init, attrs.has("kernel_shape") && attrs.has("pads") && attrs.has("pool_pads"),
                   "needs the kernel_shape, pads and pool_pads attributes");
  const std::vector<int64_t> kernel = attrs.GetInts("kernel_shape");
  const std::vector<int64_t> pads = attrs.GetInts("pads");
  const std::vector<int64_t> pool_pads = attrs.GetInts("pool_pads");
  KILN_LAYER_CHECK(init, kernel.size() == 2 && pads.size() == 4 && pool_pads.size() == 4,
                   "kernel_shape needs 2 entries, pads and pool_pads 4");
  for (int64_t p : pads) KILN_LAYER_CHECK(init, p >= 0, "negative pads ", DimsToString(pads));
  for (int64_t p : pool_pads)
    KILN_LAYER_CHECK(init, p >= 0 && p <= 1, "pool_pads must be 0 or 1, got ",
                     DimsToString(pool_pads));

  ck::ConvPoolParams p;
  p.n = static_cast<int>(x.dims[0]);
  p.c = static_cast<int>(images ? x.dims[3] : x.dims[1]);
  p.h = static_cast<int>(images ? x.dims[1] : x.dims[2]);
  p.w = static_cast<int>(images ? x.dims[2] : x.dims[3]);
  p.out_c = static_cast<int>(y.dims[1]);
  p.kh = static_cast<int>(kernel[0]);
  p.kw = static_cast<int>(kernel[1]);
  KILN_LAYER_CHECK(init, p.c >= 1 && p.c <= ck::kMaxInputChannels, "X has ", p.c,
                   " channels; the fused stem takes 1 to ", ck::kMaxInputChannels);
  KILN_LAYER_CHECK(init, p.out_c % 16 == 0 && p.out_c >= 16 && p.out_c <= ck::kMaxOutputChannels,
                   "Y has ", p.out_c, " channels; the fused stem takes multiples of 16 up to ",
                   ck::kMaxOutputChannels);
  KILN_LAYER_CHECK(init, p.kh >= 1 && p.kh <= ck::kMaxKernel && p.kw >= 1 &&
                             p.kw <= ck::kMaxKernel,
                   "kernel ", DimsToString(kernel), " exceeds ", ck::kMaxKernel, "x",
                   ck::kMaxKernel);
  const std::vector<int64_t> packed = {p.out_c, ck::PaddedK(p.kh, p.kw)};
  KILN_LAYER_CHECK(init, w.dtype == DType::kFloat16 && w.dims == packed, "W ", w.ToString(),
                   " must be the packed float16 ", DimsToString(packed));
  if (has_bias)
    KILN_LAYER_CHECK(init, init.inputs[2].dtype == DType::kFloat16 &&
                               init.inputs[2].numel() == p.out_c,
                     "B ", init.inputs[2].ToString(), " must hold ", p.out_c, " float16 values");
  p.pad_top = static_cast<int>(pads[0]);
  p.pad_left = static_cast<int>(pads[1]);
  const int64_t conv_h = (x.dims[images ? 1 : 2] + pads[0] + pads[2] - p.kh) / 2 + 1;
  const int64_t conv_w = (x.dims[images ? 2 : 3] + pads[1] + pads[3] - p.kw) / 2 + 1;
  KILN_LAYER_CHECK(init, conv_h >= 1 && conv_w >= 1, "the convolution of ", x.ToString(),
                   " is empty");
  p.conv_h = static_cast<int>(conv_h);
  p.conv_w = static_cast<int>(conv_w);
  p.pool_pad_top = static_cast<int>(pool_pads[0]);
  p.pool_pad_left = static_cast<int>(pool_pads[1]);
  p.pool_h = static_cast<int>(y.dims[2]);
  p.pool_w = static_cast<int>(y.dims[3]);
  // Every window must start inside the padded convolution output and hold a
  // position of it (ONNX MaxPool's output size guarantees both).
  KILN_LAYER_CHECK(init, y.dims[0] == x.dims[0] && p.pool_h >= 1 && p.pool_w >= 1 &&
                             2 * (p.pool_h - 1) - p.pool_pad_top < p.conv_h &&
                             2 * (p.pool_w - 1) - p.pool_pad_left < p.conv_w,
                   "Y ", y.ToString(), " is not a 3x3 stride-2 pool of the ", conv_h, "x",
                   conv_w, " convolution of ", x.ToString());
  p.relu = attrs.GetInt("relu", 0) != 0;
  if (images)
    p.normalize = MakeNormalizeImageParams(attrs.GetFloats("mean"), attrs.GetFloats("std"), p.c,
                                           init.node.Describe().c_str());
  return std::make_unique<ConvPoolLayer>(p, x.dtype, has_bias);
}

}  // namespace

void RegisterConvPoolGpuLayers(GpuLayerRegistry& registry) {
  registry.Register({"KilnConvPool", MakeConvPool, /*accepts_nhwc=*/false});
}

}  // namespace kiln::gpu
