// `kiln bench --ablation` (bench_ablation.cc): the optimization ladder of
// kiln::Pipeline, one step at a time, in one table.
#pragma once

#include "cli/cli_util.h"

namespace kiln::cli {

// --ablation [--batches N], hooked into `kiln bench` (bench.cc).
struct AblationFlags {
  bool on = false;
  int batches = 64;
};

// Runs steps 1..8 (9 as a skipped row) with `batches` batches each and prints
// the table and the end-to-end line; returns the exit code.
int RunBenchAblation(const BenchBasics& basics, int batches);

}  // namespace kiln::cli
