// kiln::Pipeline: a Scheduler (pipeline/scheduler.h) driving GPU or CPU stages.
#include "kiln/pipeline.h"

#include "kiln/engine.h"
#include "kiln/error.h"
#include "pipeline/cpu_stages.h"
#include "pipeline/gpu_stages.h"
#include "pipeline/scheduler.h"

namespace kiln {

Pipeline::Pipeline(std::unique_ptr<pipeline::Stages> stages, const PipelineConfig& config,
                   PipelineCallback callback)
    : stages_(std::move(stages)) {
  pipeline::SchedulerOptions options;
  options.slots = pipeline::EffectiveSlots(config);
  options.lanes = config.contexts;
  options.async_output = config.async_output;
  options.on_callback_error = config.on_callback_error;
  scheduler_ = std::make_unique<pipeline::Scheduler>(*stages_, options, std::move(callback));
}

std::unique_ptr<Pipeline> Pipeline::Create(const Engine& engine, const PipelineConfig& config,
                                           PipelineCallback callback) {
  return std::unique_ptr<Pipeline>(
      new Pipeline(pipeline::MakeGpuStages(engine, config), config, std::move(callback)));
}

std::unique_ptr<Pipeline> Pipeline::CreateCpu(const Model& model, const PipelineConfig& config,
                                              PipelineCallback callback,
                                              const std::map<std::string, std::vector<int64_t>>& shapes) {
  return std::unique_ptr<Pipeline>(new Pipeline(
      std::make_unique<pipeline::CpuStages>(model, config, shapes), config, std::move(callback)));
}

// The scheduler drains (and stops its threads) before the stages go away.
Pipeline::~Pipeline() { scheduler_.reset(); }

uint64_t Pipeline::Submit(const std::vector<Tensor>& inputs) {
  pipeline::BatchInput input;
  input.tensors = &inputs;
  return scheduler_->Submit(input);
}

uint64_t Pipeline::SubmitImages(const uint8_t* nhwc, size_t bytes) {
  pipeline::BatchInput input;
  input.images = nhwc;
  input.image_bytes = bytes;
  return scheduler_->Submit(input);
}

void Pipeline::Flush() { scheduler_->Flush(); }

const std::vector<TensorDesc>& Pipeline::inputs() const { return stages_->inputs(); }
const std::vector<TensorDesc>& Pipeline::outputs() const { return stages_->outputs(); }
PipelineStats Pipeline::stats() const { return scheduler_->stats(); }
size_t Pipeline::DeviceMemoryBytes() const { return stages_->DeviceMemoryBytes(); }

void Pipeline::WriteTimeline(const std::string& path) const {
  const std::vector<profile::TimelineSpan> spans = stages_->Timeline();
  KILN_CHECK(!spans.empty(), "pipeline: no timeline recorded (set PipelineConfig::record_timeline; "
             "GPU pipelines only)");
  profile::WriteChromeTrace(spans, path);
}

}  // namespace kiln
