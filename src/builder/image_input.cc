#include "builder/image_input.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

namespace kiln::builder {
namespace {

std::string UnusedNodeName(const ir::Graph& graph, const std::string& base) {
  auto used = [&](const std::string& name) {
    return std::any_of(graph.nodes().begin(), graph.nodes().end(),
                       [&](const auto& n) { return n->name == name; });
  };
  if (!used(base)) return base;
  for (int i = 1;; ++i)
    if (std::string candidate = StrCat(base, "_", i); !used(candidate)) return candidate;
}

}  // namespace

void ApplyImageInput(ir::Graph& graph, const ImageInput& image) {
  if (!image.enabled()) return;
  const std::string& name = image.name;
  auto it = std::find_if(graph.inputs().begin(), graph.inputs().end(),
                         [&](const ir::Value* v) { return v->name == name; });
  if (it == graph.inputs().end()) {
    std::string inputs;
    for (const ir::Value* v : graph.inputs()) inputs += StrCat(inputs.empty() ? "" : ", ", v->name);
    Fail("image input '", name, "' is not an input of the model (inputs: ", inputs, ")");
  }
  ir::Value* x = *it;
  const ir::TensorType& type = x->type;
  KILN_CHECK(type.dtype == DType::kFloat32 && type.has_rank() && type.rank() == 4, "image input '",
             name, "' is ", type.ToString(), "; images feed a float32 [N,C,H,W] input");
  const ir::Shape nchw = *type.shape;
  KILN_CHECK(nchw[1].is_known() && nchw[1].value >= 1 && nchw[1].value <= kMaxImageChannels,
             "image input '", name, "' is ", type.ToString(), ": its channel dim must be fixed by the "
             "model, 1 to ", kMaxImageChannels);
  const int64_t channels = nchw[1].value;
  KILN_CHECK(static_cast<int64_t>(image.mean.size()) == channels &&
                 static_cast<int64_t>(image.std.size()) == channels,
             "image input '", name, "' has ", channels, " channels: mean and std need ", channels,
             " values each, got ", image.mean.size(), " and ", image.std.size());
  for (size_t c = 0; c < image.std.size(); ++c)
    KILN_CHECK(std::isfinite(image.mean[c]) && std::isfinite(image.std[c]) && image.std[c] != 0.f,
               "image input '", name, "': channel ", c, " has mean ", image.mean[c], " and std ",
               image.std[c], " (finite, std non-zero)");
  KILN_CHECK(!graph.IsGraphOutput(x), "image input '", name,
             "' is also an output of the model; it cannot become uint8 images");

  ir::Value* normalized = graph.AddValue(graph.UniqueName(name + "_normalized"), type);
  graph.ReplaceAllUses(x, normalized);
  x->type = {DType::kUInt8, ir::Shape{nchw[0], nchw[2], nchw[3], nchw[1]}};
  ir::Node* node =
      graph.AddNode("KilnNormalizeImage", UnusedNodeName(graph, name + "_normalize"), {x}, {normalized});
  node->attrs.set("mean", image.mean);
  node->attrs.set("std", image.std);
  graph.SortTopologically();
}

nlohmann::json ImageInputToJson(const ImageInput& image) {
  return {{"name", image.name}, {"mean", image.mean}, {"std", image.std}};
}

ImageInput ImageInputFromJson(const nlohmann::json& j) {
  ImageInput image;
  try {
    image.name = j.at("name").get<std::string>();
    image.mean = j.at("mean").get<std::vector<float>>();
    image.std = j.at("std").get<std::vector<float>>();
  } catch (const nlohmann::json::exception& e) {
    Fail("malformed image input settings (", e.what(), ")");
  }
  return image;
}

}  // namespace kiln::builder
