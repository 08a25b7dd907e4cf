// BuildConfig::image_input (include/kiln/image.h): the engine takes uint8
// images [N, H, W, C] where the model takes a float [N, C, H, W] tensor.
//
// ApplyImageInput runs first in the lowering (after FreezeInputs, before
// SpecializeShapes, so shapes and profiles give the new binding's dims): the
// input keeps its name but becomes uint8 [N, H, W, C], and a
//
//   KilnNormalizeImage(images) -> normalized   (src/ops/image.cc)
//
// node produces the float value every former reader now reads. Everything
// after sees an ordinary float tensor; FusePadSpaceToDepth
// (conv_space_to_depth.h) then folds the normalization into a space-to-depth
// stem that reads it, and elsewhere the normalize layer runs on its own.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "ir/graph.h"
#include "kiln/image.h"

namespace kiln::builder {

// A no-op when !image.enabled(). Throws naming the input when it is not a
// float32 rank-4 input of the graph with a fixed channel dim of 1 to
// kMaxImageChannels, when mean/std do not have one finite value per
// channel (std non-zero), or when the input is also a graph output.
void ApplyImageInput(ir::Graph& graph, const ImageInput& image);

// The option as the engine file stores it ({"name", "mean", "std"}), and back
// (throws kiln::Error on a malformed object).
nlohmann::json ImageInputToJson(const ImageInput& image);
ImageInput ImageInputFromJson(const nlohmann::json& j);

}  // namespace kiln::builder
