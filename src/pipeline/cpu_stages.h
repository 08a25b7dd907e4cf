// The CPU reference backend of kiln::Pipeline: each batch runs through
// Model::RunCpu on its lane's host thread; images are normalized on the host
// (NormalizeImagesCpu). Used by Pipeline::CreateCpu and the scheduler tests.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/kiln.h"
#include "kiln/pipeline.h"
#include "pipeline/scheduler.h"

namespace kiln::pipeline {

// Batches in flight for a config: `slots` with overlap, else one.
int EffectiveSlots(const PipelineConfig& config);

class CpuStages : public Stages {
 public:
  // Dynamic input dims take their size from `shapes` (throws when missing).
  CpuStages(const Model& model, const PipelineConfig& config,
            const std::map<std::string, std::vector<int64_t>>& shapes);

  const std::vector<TensorDesc>& inputs() const override { return inputs_; }
  const std::vector<TensorDesc>& outputs() const override { return model_.outputs(); }
  void Validate(const BatchInput& input) const override;
  void Stage(int slot, uint64_t sequence, const BatchInput& input) override;
  void Launch(int slot, int lane, uint64_t sequence) override;
  void Complete(int slot, uint64_t sequence) override;
  std::vector<Tensor> Outputs(int slot) override;

 private:
  struct Slot {
    std::vector<Tensor> inputs;   // Staged copies, one per model input.
    std::vector<Tensor> outputs;  // Filled by Launch.
  };
  const Model& model_;
  const PipelineConfig config_;
  std::vector<TensorDesc> inputs_;  // Concrete dims.
  std::vector<Slot> slots_;
};

}  // namespace kiln::pipeline
