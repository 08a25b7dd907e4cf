#include "pipeline/ladder.h"

namespace kiln::pipeline {

std::vector<LadderStep> OptimizationLadder(int slots, int contexts) {
  std::vector<LadderStep> ladder;
  PipelineConfig c;
  c.slots = slots;
  c.reuse_device_buffers = false;
  c.pinned_staging = false;
  c.overlap = false;
  c.async_output = false;
  c.cuda_graph = false;
  c.contexts = 1;
  bool fp16 = false;
  auto add = [&](const char* name, const char* adds) {
    LadderStep s;
    s.step = static_cast<int>(ladder.size()) + 1;
    s.name = name;
    s.adds = adds;
    s.fp16 = fp16;
    s.config = c;
    ladder.push_back(s);
  };
  add("baseline", "per-batch device buffers, pageable host memory, FP32, one stream, sync output");
  c.reuse_device_buffers = true;
  add("reuse buffers", "device buffers allocated once and reused across batches");
  c.pinned_staging = true;
  add("pinned", "pinned host staging buffers");
  fp16 = true;
  add("fp16", "FP16 engine");
  c.overlap = true;
  add("overlap", "copy-in/compute/copy-out streams with events, batches in flight");
  c.async_output = true;
  add("async output", "output processing on a pipeline thread");
  c.cuda_graph = true;
  add("cuda graph", "CUDA Graph replay of each inference");
  c.contexts = contexts;
  add("contexts", "several execution contexts on their own streams and host threads");
  add("profiles", "optimization profiles: each batch runs at its own size");
  ladder.back().profiles = true;
  return ladder;
}

}  // namespace kiln::pipeline
