// `kiln perf`: a perf_analyzer-style load generator against any KServe v2
// server (kiln serve, Triton) over HTTP or gRPC: C requests in flight (or a
// fixed request rate) per step, client latency percentiles and throughput
// over stable measurement windows, the server's own queue/compute split, a
// summary table and optionally a JSON report. The work is in
// src/serve/load_generator.cc.
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kiln/error.h"
#include "serve/load_generator.h"

namespace kiln::cli {
namespace {

struct PerfOptions {
  serve::LoadOptions load;
  std::string url, concurrency_range, request_rate_range, json_path;
  std::vector<std::string> shapes;
};

// "name:1,3,224,224" (perf_analyzer's --shape) into options.shapes.
void ParseShape(const std::string& text, serve::LoadOptions& options) {
  const size_t colon = text.rfind(':');
  KILN_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < text.size(),
             "--shape expects NAME:D1,D2,..., got '", text, "'");
  std::vector<int64_t> dims;
  const std::string list = text.substr(colon + 1);
  size_t begin = 0;
  while (begin <= list.size()) {
    size_t end = list.find(',', begin);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(begin, end - begin);
    KILN_CHECK(!item.empty() && item.size() <= 12 &&
                   item.find_first_not_of("0123456789") == std::string::npos && std::stoll(item) > 0,
               "--shape '", text, "': '", item, "' is not a positive dim");
    dims.push_back(std::stoll(item));
    begin = end + 1;
  }
  options.shapes[text.substr(0, colon)] = dims;
}

int RunPerf(PerfOptions& o) {
  KILN_CHECK(o.concurrency_range.empty() || o.request_rate_range.empty(),
             "give --concurrency-range or --request-rate-range, not both");
  for (const std::string& s : o.shapes) ParseShape(s, o.load);
  o.load.url = !o.url.empty() ? o.url : o.load.protocol == "grpc" ? "localhost:8001" : "localhost:8000";
  std::vector<double> levels;
  const bool rate = !o.request_rate_range.empty();
  if (rate) {
    levels = serve::ParseLoadRange(o.request_rate_range, "--request-rate-range");
  } else {
    levels = serve::ParseLoadRange(o.concurrency_range.empty() ? "1" : o.concurrency_range,
                                   "--concurrency-range");
    for (double c : levels) {
      KILN_CHECK(c == static_cast<double>(static_cast<int>(c)) && c <= 4096,
                 "--concurrency-range: ", c, " is not a whole number of requests up to 4096");
    }
  }
  serve::LoadGenerator generator(o.load);
  std::vector<serve::StepResult> steps;
  uint64_t errors = 0;
  for (double level : levels) {
    std::cerr << "kiln perf: " << (rate ? "request rate " : "concurrency ") << level << " ..."
              << std::endl;
    steps.push_back(rate ? generator.RunRequestRate(level)
                         : generator.RunConcurrency(static_cast<int>(level)));
    errors += steps.back().errors;
  }
  std::cout << serve::FormatLoadReport(generator, steps) << std::flush;
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << serve::LoadReportJson(generator, steps);
    KILN_CHECK(out.good(), "cannot write ", o.json_path);
    std::cout << "wrote " << o.json_path << "\n";
  }
  for (const serve::StepResult& s : steps) {
    KILN_CHECK(s.requests > 0, "no request succeeded at ", s.mode, " ", s.level,
               s.first_error.empty() ? std::string() : ": " + s.first_error);
  }
  if (errors > 0) {
    std::cerr << "kiln perf: " << errors << " requests failed during the measurements\n";
    return 1;
  }
  return 0;
}

}  // namespace

void AddPerfCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<PerfOptions>();
  CLI::App* cmd = app.add_subcommand(
      "perf", "Load-test a KServe v2 server (kiln serve, Triton), like perf_analyzer");
  cmd->add_option("-m,--model", o->load.model, "Model name")->required();
  cmd->add_option("-x,--model-version", o->load.version, "Model version (default: latest)");
  cmd->add_option("-u,--url", o->url, "Server host:port (default localhost:8000; gRPC :8001)");
  cmd->add_option("-i,--protocol", o->load.protocol, "http or grpc")
      ->check(CLI::IsMember({"http", "grpc"}));
  cmd->add_option("-b,--batch-size", o->load.batch_size, "Rows per request")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--concurrency-range", o->concurrency_range,
                  "Requests in flight: START:END:STEP, a list a,b,c or one value (default 1)");
  cmd->add_option("--request-rate-range", o->request_rate_range,
                  "Requests per second on a fixed schedule: START:END:STEP, a list or one value");
  cmd->add_option("-p,--measurement-interval-ms", o->load.measurement_interval_ms,
                  "Length of one measurement window")
      ->check(CLI::Range(10, 3600000));
  cmd->add_option("--warmup-ms", o->load.warmup_ms,
                  "Warm-up before the first window (default: one measurement interval)")
      ->check(CLI::Range(0, 3600000));
  cmd->add_option("--max-trials", o->load.max_trials,
                  "Measurement windows per step at most while waiting for stability")
      ->check(CLI::Range(3, 1000));
  cmd->add_option("-s,--stability-percentage", o->load.stability_percent,
                  "Windows agree when within this percent of their mean")
      ->check(CLI::Range(0.0, 1000.0));
  cmd->add_option("--max-threads", o->load.max_threads, "Sender threads of the request-rate mode")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--grpc-channels", o->load.grpc_channels,
                  "gRPC connections the concurrent clients share (default 0: min(concurrency, "
                  "16)); the concurrency C equal to this gives each client its own, as "
                  "perf_analyzer does")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--shape", o->shapes,
                  "NAME:D1,D2,... dims for an input with variable dims (without the batch dim)");
  cmd->add_flag("--binary", o->load.binary, "HTTP: send and receive tensors as binary data");
  cmd->add_option("--shared-memory", o->load.shared_memory,
                  "system: each concurrent sender registers its own POSIX shared memory regions "
                  "once, writes its inputs there once, and requests only reference them (outputs "
                  "come back there too); the server must run on this host. none (default): "
                  "tensors travel in the requests")
      ->check(CLI::IsMember({"none", "system"}));
  cmd->add_option("--output-shared-memory-size", o->load.output_shared_memory_size,
                  "Bytes reserved per output whose size the metadata does not fix, with "
                  "--shared-memory system (default 102400)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 40));
  cmd->add_option("--request-timeout-ms", o->load.request_timeout_ms, "Per-request timeout")
      ->check(CLI::Range(1, 3600000));
  cmd->add_option("--seed", o->load.seed, "Seed of the random input values");
  cmd->add_option("--json", o->json_path, "Also write the results as JSON to this file");
  cmd->callback([o, &exit_code] { exit_code = RunPerf(*o); });
}

}  // namespace kiln::cli
