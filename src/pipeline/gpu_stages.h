// The engine-backed (GPU) stages of kiln::Pipeline. Per lane: an
// ExecutionContext sharing the engine's weights and its streams (copy-in,
// compute, copy-out with overlap; one stream without). Per slot: host staging
// (pinned or pageable) and device buffers (reused, or allocated per batch for
// the baseline) and the events that order the streams.
#pragma once

#include <memory>

#include "kiln/engine.h"
#include "kiln/pipeline.h"
#include "pipeline/scheduler.h"

namespace kiln::pipeline {

std::unique_ptr<Stages> MakeGpuStages(const Engine& engine, const PipelineConfig& config);

}  // namespace kiln::pipeline
