#include "pipeline/cpu_stages.h"

#include <cstring>

#include "kiln/error.h"

namespace kiln::pipeline {

int EffectiveSlots(const PipelineConfig& config) { return config.overlap ? config.slots : 1; }

CpuStages::CpuStages(const Model& model, const PipelineConfig& config,
                     const std::map<std::string, std::vector<int64_t>>& shapes)
    : model_(model), config_(config), inputs_(model.inputs()) {
  for (TensorDesc& d : inputs_) {
    auto it = shapes.find(d.name);
    if (it != shapes.end()) {
      KILN_CHECK(it->second.size() == d.dims.size(), "pipeline: shape for input '", d.name, "' has rank ",
                 it->second.size(), ", the input ", d.ShapeString());
      for (size_t i = 0; i < d.dims.size(); ++i)
        KILN_CHECK(d.dims[i] < 0 || d.dims[i] == it->second[i], "pipeline: shape ",
                   DimsToString(it->second), " contradicts input '", d.name, "' ", d.ShapeString());
      d.dims = it->second;
    }
    for (int64_t x : d.dims)
      KILN_CHECK(x >= 0, "pipeline: input '", d.name, "' ", d.ShapeString(),
                 " has dynamic dims; give its dims in `shapes`");
  }
  const int slots = EffectiveSlots(config);
  KILN_CHECK(slots >= 1, "pipeline: slots must be at least 1, got ", slots);
  slots_.resize(static_cast<size_t>(slots));
  for (Slot& s : slots_)
    for (const TensorDesc& d : inputs_) s.inputs.emplace_back(d.dtype, d.dims);
}

void CpuStages::Validate(const BatchInput& input) const {
  if (input.is_images()) {
    CheckImageBytes(ImageInputGeometry(inputs_, config_.mean, config_.std), input.image_bytes);
    KILN_CHECK(input.images != nullptr, "pipeline: null image pointer");
  } else {
    CheckTensorInputs(inputs_, *input.tensors);
  }
}

void CpuStages::Stage(int slot, uint64_t, const BatchInput& input) {
  Slot& s = slots_.at(static_cast<size_t>(slot));
  if (input.is_images()) {
    NormalizeImagesCpu(input.images, ImageInputGeometry(inputs_, config_.mean, config_.std),
                       config_.mean, config_.std, s.inputs[0].raw_data());
    return;
  }
  for (size_t i = 0; i < s.inputs.size(); ++i)
    std::memcpy(s.inputs[i].raw_data(), (*input.tensors)[i].raw_data(), s.inputs[i].nbytes());
}

void CpuStages::Launch(int slot, int, uint64_t) {
  Slot& s = slots_.at(static_cast<size_t>(slot));
  std::map<std::string, Tensor> feeds;
  for (size_t i = 0; i < inputs_.size(); ++i) feeds[inputs_[i].name] = s.inputs[i];
  s.outputs = model_.RunCpu(feeds);
}

void CpuStages::Complete(int, uint64_t) {}  // Launch already ran the batch.

std::vector<Tensor> CpuStages::Outputs(int slot) { return slots_.at(static_cast<size_t>(slot)).outputs; }

}  // namespace kiln::pipeline
