// The textbook optimization ladder for continuous inference, as pipeline
// configs: each step turns one more feature on over the previous step, so
// `kiln bench --ablation` and the GPU tests run the same code with features
// added one by one.
#pragma once

#include <string>
#include <vector>

#include "kiln/pipeline.h"

namespace kiln::pipeline {

struct LadderStep {
  int step = 0;
  std::string name;   // "baseline", "reuse buffers", ...
  std::string adds;   // What the step adds, for reports.
  bool fp16 = false;  // Runs the FP16 engine (steps >= 4).
  // Step 9: an engine with optimization profiles fed batches of mixed sizes
  // (compared with step 8's config padding the same stream to full batches).
  bool profiles = false;
  bool skipped = false;
  std::string skip_reason;  // Why a step does not run yet.
  PipelineConfig config;
};

// Steps 1..9 (step 9 keeps step 8's config; its engine has profiles). `slots`: batches in flight from step 5
// on; `contexts`: execution contexts (and host threads) in step 8.
std::vector<LadderStep> OptimizationLadder(int slots = 3, int contexts = 2);

}  // namespace kiln::pipeline
