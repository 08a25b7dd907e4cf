// Batch-size sweeps (`kiln bench --sweep`): the pure logic on measured
// numbers, CPU only. Which batch sizes to build, the shapes each build gets,
// the best-throughput batch and the knee, the report table and the SVG plot.
// The GPU measurement that fills SweepPoints lives in src/cli/bench_sweep.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kiln/kiln.h"

namespace kiln::profile {

// The largest batch size a sweep accepts (a typo guard, not a GPU limit).
constexpr int64_t kMaxSweepBatch = 1 << 20;

// "1,2,4,8" -> {1, 2, 4, 8}. Throws kiln::Error naming the bad entry for an
// empty list or entry, a non-number, a size < 1 or > kMaxSweepBatch, or sizes
// that are not strictly increasing.
std::vector<int64_t> ParseBatchList(const std::string& text);

// The concrete dims of every input for one batch size of a sweep. `inputs`
// are the model's inputs (-1 marks a dynamic dim, dim_names its symbol);
// `given` holds the --shapes dims. The batch goes to dim 0 of every input
// whose declared dim 0 is dynamic (whatever --shapes says for that dim);
// other dims come from --shapes, else from another input's dim of the same
// symbol (so BERT's input_ids=1x128 also sets attention_mask's sequence dim),
// else stay as declared, dynamic ones becoming 1. Throws when no input has a
// dynamic dim 0, when --shapes names no input, or gives a shape of the wrong
// rank or contradicting a fixed dim.
std::map<std::string, std::vector<int64_t>> ShapesForBatch(
    const std::vector<TensorDesc>& inputs, const std::map<std::string, std::vector<int64_t>>& given,
    int64_t batch);

// One batch size of a sweep, as measured.
struct SweepPoint {
  int64_t batch = 0;
  bool ok = false;
  std::string error;           // Why the batch size failed (when !ok), one line.
  double p50_ms = 0, p99_ms = 0;  // Latency of one inference (one replay, GPU idle before).
  double samples_per_s = 0;    // Back-to-back replays: batch x inferences per second.
  size_t weight_bytes = 0;     // Engine weights on the device.
  size_t context_bytes = 0;    // One context's activation arena + workspace.
  double build_seconds = 0;
  size_t device_bytes() const { return weight_bytes + context_bytes; }
};

// The knee, in one sentence (printed under the table and written to JSON).
// Equivalently: the first local maximum of throughput / latency, Kleinrock's
// "power", the classic optimal operating point of a queueing system (and
// BBR's); at a step that doubles the batch it means p50 latency grew more
// than sqrt(2) = 1.41x.
extern const char kKneeDefinition[];

struct SweepAnalysis {
  int best = -1;  // Index of the highest-throughput successful point (ties: the smaller batch).
  int knee = -1;  // Index of the knee; -1 when fewer than two points succeeded or it is not reached.
  int succeeded = 0;
  // Per point, relative to the previous successful point; 0 where there is
  // none or the point failed.
  std::vector<double> throughput_gain;  // samples/s ratio
  std::vector<double> latency_growth;   // p50 ratio
};
// Points must be in increasing batch order (as ParseBatchList gives them).
SweepAnalysis AnalyzeSweep(const std::vector<SweepPoint>& points);

// The report: a header, one row per point (failures say so), the best and
// knee rows marked, then lines naming the best batch and the knee (with
// kKneeDefinition).
std::string FormatSweepTable(const std::vector<SweepPoint>& points, const SweepAnalysis& analysis);

// A self-contained SVG (no scripts, fonts or external references):
// throughput (samples/s, left axis) against batch size on a log2 x axis, p50
// and p99 latency (ms) on the right axis, the knee and the best batch
// marked, failed batch sizes crossed out on the x axis; `title` is escaped.
std::string SweepSvg(const std::vector<SweepPoint>& points, const SweepAnalysis& analysis,
                     const std::string& title);

// Escapes &, <, >, " and ' for XML text and attribute values.
std::string XmlEscape(const std::string& text);

}  // namespace kiln::profile
