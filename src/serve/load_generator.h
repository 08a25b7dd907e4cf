// A perf_analyzer-style load generator for any KServe v2 server (kiln serve,
// Triton), over HTTP (cpp-httplib; JSON or the binary tensor extension) or
// gRPC (the generated KServe stub). `kiln perf` is its command line.
//
//   LoadGenerator gen(options);            // reads metadata + config, builds the request
//   StepResult r = gen.RunConcurrency(8);  // 8 requests always in flight
//   StepResult q = gen.RunRequestRate(200);  // 200 requests/s on a fixed schedule
//
// A step first runs a warm-up window, then measurement windows of
// measurement_interval_ms until the last three agree (throughput and average
// latency within stability_percent of their mean) or max_trials windows have
// passed; the result merges those last three windows. A request belongs to the
// window in which it completed. The server's own statistics (queue, compute
// input/infer/output) are read at the window boundaries and reported per
// request next to the client's latencies.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "serve/server_core.h"

namespace kiln::serve {

struct LoadOptions {
  std::string url = "localhost:8000";  // host:port (an "http://" prefix is accepted).
  std::string protocol = "http";       // "http" or "grpc".
  std::string model, version;          // version "": the server's latest.
  int batch_size = 1;                  // Rows per request (models with max_batch_size > 0).
  // Dims for inputs whose metadata has variable dims, without the batch dim
  // (perf_analyzer's --shape).
  std::map<std::string, std::vector<int64_t>> shapes;
  bool binary = false;  // HTTP: binary tensor data extension for inputs and outputs.
  // "system": every sender registers its own POSIX shared memory regions
  // once (inputs written there once, outputs come back there) and its
  // requests only reference them, as perf_analyzer --shared-memory system;
  // the server must run on this host. "none": tensors travel in the requests.
  std::string shared_memory = "none";
  // Bytes reserved per output whose metadata has variable dims (besides the
  // batch dim) in shared memory mode.
  size_t output_shared_memory_size = 100 * 1024;
  int measurement_interval_ms = 2000;
  int warmup_ms = -1;  // -1: one measurement interval.
  int max_trials = 10;  // Measurement windows per step at most.
  double stability_percent = 10;
  int max_threads = 16;  // Sender threads of the request-rate mode.
  // gRPC connections shared by the concurrent clients (round robin); 0:
  // min(clients, 16). Concurrency mode over gRPC keeps its requests in
  // flight asynchronously (no thread per request); the request-rate mode's
  // max_threads senders block on their calls.
  int grpc_channels = 0;
  int request_timeout_ms = 30000;
  uint64_t seed = 1;  // Of the random input values.
};

struct LatencySummary {  // Client-side, microseconds, successful requests.
  double avg_us = 0, min_us = 0, max_us = 0, p50_us = 0, p90_us = 0, p95_us = 0, p99_us = 0;
};

// The server's statistics over the measured windows (differences of two
// snapshots), averaged per successful request, in microseconds.
struct ServerSideSummary {
  bool available = false;  // false: the statistics API did not answer.
  uint64_t requests = 0, executions = 0, inferences = 0;
  double request_us = 0, queue_us = 0, compute_input_us = 0, compute_infer_us = 0,
         compute_output_us = 0;
};

struct StepResult {
  std::string mode;   // "concurrency" or "request_rate".
  double level = 0;   // Requests in flight, or requests per second.
  uint64_t requests = 0;  // Successful requests completed in the measured windows.
  uint64_t errors = 0;    // Failed requests completed in the measured windows.
  uint64_t delayed = 0;   // Request rate: sends that started over 1 ms after their slot.
  double seconds = 0;     // Length of the measured windows.
  double requests_per_second = 0, inferences_per_second = 0;
  LatencySummary latency;
  int windows = 0;      // Measurement windows run (warm-up excluded).
  bool stable = false;  // The last three windows agreed.
  std::string first_error;
  ServerSideSummary server;
};

class LoadGenerator {
 public:
  // Reads the model's metadata and config from the server and builds the
  // request: random non-zero values, variable dims from options.shapes.
  // Throws kiln::Error (server unreachable, unknown model, unsupported
  // datatype, a variable dim without --shape).
  explicit LoadGenerator(LoadOptions options);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  StepResult RunConcurrency(int concurrency);
  StepResult RunRequestRate(double requests_per_second);

  const LoadOptions& options() const;
  int max_batch_size() const;  // The model's, from its config.
  // The request's inputs with their concrete dims (batch dim included).
  const std::vector<TensorIO>& inputs() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// perf_analyzer's range syntax: "START:END:STEP" (END included; STEP defaults
// to 1), "START:END", a single value, or a comma-separated list. Throws
// kiln::Error naming `what` for anything else or a non-positive value.
std::vector<double> ParseLoadRange(const std::string& text, const std::string& what);

// The summary table (one row per step) and perf_analyzer's closing lines.
std::string FormatLoadReport(const LoadGenerator& generator, const std::vector<StepResult>& steps);
// Options, model inputs and every step as a JSON document.
std::string LoadReportJson(const LoadGenerator& generator, const std::vector<StepResult>& steps);

}  // namespace kiln::serve
