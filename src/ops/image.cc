// Kiln-internal image operators (not ONNX): the builder inserts them for
// BuildConfig::image_input (src/builder/image_input.h); GPU layers in
// src/cuda/layers/space_to_depth.cc. No CPU kernels: the CPU backend runs
// ONNX models, which never contain them.
//
//   KilnNormalizeImage(X) -> Y
//     X uint8 [N, H, W, C]; Y float32 [N, C, H, W] with
//     Y[n, c, h, w] = (X[n, h, w, c] / 255 - mean[c]) / std[c]  (include/kiln/image.h)
//     mean, std   float lists of C entries (std non-zero), C <= kMaxImageChannels
#include <cmath>

#include "kiln/image.h"
#include "ops/registry.h"

namespace kiln {
namespace {

using ir::Dim;
using ir::Shape;
using ir::TensorType;

void InferNormalizeImage(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  KILN_CHECK(in.dtype == DType::kUInt8, "input must be uint8 images [N,H,W,C], got ", in.ToString());
  const std::vector<float> mean = ctx.attrs().GetFloats("mean");
  const std::vector<float> std = ctx.attrs().GetFloats("std");
  KILN_CHECK(!mean.empty() && mean.size() == std.size() &&
                 mean.size() <= static_cast<size_t>(kMaxImageChannels),
             "mean and std need one value per channel (1 to ", kMaxImageChannels, "), got ",
             mean.size(), " and ", std.size());
  for (float s : std) KILN_CHECK(s != 0.f && std::isfinite(s), "std has the entry ", s);
  for (float m : mean) KILN_CHECK(std::isfinite(m), "mean has the entry ", m);
  if (!in.has_rank()) {
    ctx.set_output(0, DType::kFloat32, Shape(4, Dim::Unknown()));
    return;
  }
  KILN_CHECK(in.rank() == 4, "input must be 4-D images [N,H,W,C], got ", in.ToString());
  const Shape& s = *in.shape;
  KILN_CHECK(!s[3].is_known() || s[3].value == static_cast<int64_t>(mean.size()), "input ",
             in.ToString(), " has ", s[3].ToString(), " channels, mean and std have ", mean.size());
  ctx.set_output(0, DType::kFloat32, Shape{s[0], Dim::Known(static_cast<int64_t>(mean.size())), s[1], s[2]});
}

}  // namespace

void RegisterImageOps(OpRegistry& registry) {
  OpDef& def = registry.Define("KilnNormalizeImage");
  def.infer = InferNormalizeImage;
  def.min_opset = 1;
}

}  // namespace kiln
