// `kiln bench --ablation` (bench_ablation.cc): the optimization ladder of
// kiln::Pipeline, one step at a time, in one table.
#pragma once

#include <string>

#include "cli/cli_util.h"

namespace kiln::cli {

// --ablation [--batches N], hooked into `kiln bench` (bench.cc).
struct AblationFlags {
  bool on = false;
  int batches = 64;
  std::string timeline;  // Prefix: each step writes <prefix>_step<N>.json (Chrome trace).
};

// Runs steps 1..9 with `flags.batches` batches each and prints the table and
// the end-to-end line; returns the exit code.
int RunBenchAblation(const BenchBasics& basics, const AblationFlags& flags);

}  // namespace kiln::cli
