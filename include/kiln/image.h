// Images as model inputs: uint8 pixels [N, H, W, C] become the model's float
// [N, C, H, W] input by
//
//   y[n, c, h, w] = (x[n, h, w, c] / 255 - mean[c]) / std[c]
//
// in float32, in that order, with IEEE division. kiln::Pipeline::SubmitImages
// does it on the GPU ahead of a float-input engine (PipelineConfig::mean/std);
// an engine built with BuildConfig::image_input does it itself, fused into its
// first layer where it can, and takes the uint8 images as its input binding.
// The defaults (ImageNet's statistics) are defined here once for both.
// CUDA-free.
#pragma once

#include <string>
#include <vector>

namespace kiln {

// Channels an image may have (RGB, RGBA, ...).
constexpr int kMaxImageChannels = 8;

struct ImageNormalization {
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  std::vector<float> std = {0.229f, 0.224f, 0.225f};
};

// BuildConfig::image_input: the model input `name` (float [N, C, H, W]) becomes
// a uint8 [N, H, W, C] binding of the same name, normalized inside the engine.
// BuildConfig::shapes and optimization profiles then give that binding's dims
// ([N, H, W, C]). mean and std need C entries (std non-zero).
struct ImageInput {
  std::string name;  // Empty: the engine takes the model's input as it is.
  std::vector<float> mean = ImageNormalization().mean;
  std::vector<float> std = ImageNormalization().std;
  bool enabled() const { return !name.empty(); }
  bool operator==(const ImageInput& o) const {
    return name == o.name && mean == o.mean && std == o.std;
  }
};

}  // namespace kiln
