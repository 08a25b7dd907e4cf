// `kiln bench MODEL --sweep 1,2,4,...`: one engine per batch size (one shared
// timing cache), each replayed as a CUDA Graph with inputs resident on the
// device; per-inference latency p50/p99 by CUDA events and throughput from
// back-to-back replays. Prints the table with the best-throughput batch and
// the knee (src/profile/sweep.h defines it), and optionally writes an SVG
// plot and JSON. Also the flag checks and dispatch of every bench mode.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "cli/cli_util.h"
#include "profile/sweep.h"

#ifdef KILN_HAVE_CUDA
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#endif

namespace kiln::cli {

void AddBenchModeFlags(CLI::App* cmd, BenchModeFlags& modes) {
  cmd->add_option("--sweep", modes.sweep,
                  "Batch sizes to sweep, e.g. 1,2,4,8,16,32,64,128,256,512: one engine each, "
                  "CUDA Graph replay; prints the best-throughput batch and the knee")
      ->each([&modes](const std::string&) { modes.sweep_given = true; });
  cmd->add_option("--plot", modes.plot, "With --sweep: write the throughput/latency plot as SVG");
  cmd->add_option("--contexts", modes.contexts,
                  "Run N execution contexts sharing one engine's weights, concurrently")
      ->each([&modes](const std::string&) { modes.contexts_given = true; });
  cmd->add_option("--threads", modes.threads,
                  "With --contexts: host threads driving them (contexts round-robin; default 1)")
      ->each([&modes](const std::string&) { modes.threads_given = true; });
}

namespace {

#ifdef KILN_HAVE_CUDA

std::string FirstLine(const std::string& text) {
  const size_t newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(0, newline);
}

// The timing cache the sweep's builds share: the user's, or a temporary
// file removed when the sweep ends.
class SweepTimingCache {
 public:
  explicit SweepTimingCache(const std::string& user_path) : path_(user_path) {
    if (!path_.empty()) return;
    path_ = (std::filesystem::temp_directory_path() /
             ("kiln_sweep_" + std::to_string(::getpid()) + ".timing-cache"))
                .string();
    temporary_ = true;
  }
  ~SweepTimingCache() {
    std::error_code ignored;
    if (temporary_) std::filesystem::remove(path_, ignored);
  }
  SweepTimingCache(const SweepTimingCache&) = delete;
  SweepTimingCache& operator=(const SweepTimingCache&) = delete;
  const std::string& path() const { return path_; }
  bool temporary() const { return temporary_; }

 private:
  std::string path_;
  bool temporary_ = false;
};

// Replays one engine: `warmup` replays (the first captures the graph), then
// `iterations` single replays timed by events with the GPU idle before each
// (latency), then `iterations` back-to-back replays (throughput).
void MeasureSweepPoint(const Engine& engine, const BenchBasics& b, profile::SweepPoint& point,
                       nlohmann::json& extra) {
  std::unique_ptr<ExecutionContext> context = engine.CreateContext();
  DeviceBindings bindings(engine, /*seed=*/0);
  CudaStream stream;
  CudaEvent start, stop;
  auto replay = [&] { context->EnqueueGraph(bindings.inputs(), bindings.outputs(), stream.stream); };
  for (int i = 0; i < std::max(b.warmup, 1); ++i) replay();
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream.stream));

  std::vector<double> latency;
  latency.reserve(static_cast<size_t>(b.iterations));
  for (int it = 0; it < b.iterations; ++it) {
    KILN_CUDA_CHECK(cudaEventRecord(start.event, stream.stream));
    replay();
    KILN_CUDA_CHECK(cudaEventRecord(stop.event, stream.stream));
    KILN_CUDA_CHECK(cudaEventSynchronize(stop.event));
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event, stop.event));
    latency.push_back(ms);
  }
  KILN_CUDA_CHECK(cudaEventRecord(start.event, stream.stream));
  for (int it = 0; it < b.iterations; ++it) replay();
  KILN_CUDA_CHECK(cudaEventRecord(stop.event, stream.stream));
  KILN_CUDA_CHECK(cudaEventSynchronize(stop.event));
  float span_ms = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&span_ms, start.event, stop.event));
  KILN_CHECK(span_ms > 0, "no time elapsed over ", b.iterations, " replays");

  const int64_t non_finite = bindings.CountNonFiniteOutputs();
  KILN_CHECK(non_finite == 0, non_finite, " non-finite output values (timing discarded)");

  const Percentiles p = Summarize(latency);
  point.p50_ms = p.median;
  point.p99_ms = p.p99;
  point.samples_per_s = static_cast<double>(point.batch) * b.iterations / (span_ms / 1e3);
  point.weight_bytes = engine.info().weight_bytes;
  point.context_bytes = context->DeviceMemoryBytes();
  point.build_seconds = engine.info().build_seconds;
  extra = {{"latency_ms", ToJson(p)},
           {"inferences_per_s", b.iterations / (span_ms / 1e3)},
           {"kernel_launches", context->GraphKernelNodes()},
           {"tactics_timed", engine.info().tactics_timed},
           {"tactics_cached", engine.info().tactics_cached}};
}

int RunSweep(const BenchBasics& b, const std::vector<int64_t>& batches, const std::string& plot_path) {
  // The model's declared inputs decide which dims the batch size sets; every
  // batch's shapes are checked once before anything is built.
  LoadOptions load;
  load.optimize = false;
  const std::vector<TensorDesc> inputs = Model::Load(b.model, load)->inputs();
  std::map<std::string, std::vector<int64_t>> given;
  for (const std::string& spec : b.flags.shapes) {
    auto [name, dims] = ParseShapeSpec(spec);
    KILN_CHECK(!given.count(name), "--shapes gives '", name, "' twice");
    given[name] = dims;
  }
  for (int64_t batch : batches) profile::ShapesForBatch(inputs, given, batch);

  EngineFlags flags = b.flags;
  flags.shapes.clear();
  BuildConfig base = MakeBuildConfig(flags);
  SweepTimingCache cache(b.flags.timing_cache);
  base.timing_cache_path = cache.path();
  const std::string gpu = cuda::QueryDevice(0).name;
  const std::string precision = PrecisionName(base.precision);
  std::cout << "sweep: " << b.model << ", " << precision << " on " << gpu << ", batch sizes";
  for (int64_t batch : batches) std::cout << " " << batch;
  std::cout << "\n  one engine per batch size; timing cache " << cache.path()
            << (cache.temporary() ? " (temporary, shared by these builds)" : " (shared)") << "\n"
            << "  per batch: " << std::max(b.warmup, 1) << " warm-up replays, " << b.iterations
            << " CUDA Graph replays timed one at a time (latency), " << b.iterations
            << " back to back (throughput); inputs resident on the device\n"
            << std::flush;

  std::vector<profile::SweepPoint> points;
  std::vector<nlohmann::json> extras;
  for (int64_t batch : batches) {
    profile::SweepPoint point;
    point.batch = batch;
    nlohmann::json extra = nlohmann::json::object();
    try {
      BuildConfig config = base;
      config.shapes = profile::ShapesForBatch(inputs, given, batch);
      std::unique_ptr<Engine> engine = Engine::Build(b.model, config);
      MeasureSweepPoint(*engine, b, point, extra);
      point.ok = true;
    } catch (const std::exception& e) {
      // An out-of-memory at a large batch is a result, not the end of the
      // sweep. Clear CUDA's last (non-sticky) error so the next batch starts
      // clean; a sticky error makes the remaining rows fail and say so.
      cudaGetLastError();
      point.ok = false;
      point.error = FirstLine(e.what());
    }
    std::cerr << "sweep: batch " << batch << ": "
              << (point.ok ? StrCat(point.samples_per_s, " samples/s, p50 ", point.p50_ms, " ms")
                           : "FAILED: " + point.error)
              << "\n";
    points.push_back(point);
    extras.push_back(extra);
  }

  const profile::SweepAnalysis analysis = profile::AnalyzeSweep(points);
  std::cout << "\n" << profile::FormatSweepTable(points, analysis);

  if (!plot_path.empty()) {
    std::string model_name = std::filesystem::path(b.model).filename().string();
    std::ofstream out(plot_path, std::ios::binary);
    KILN_CHECK(out, "cannot write the plot ", plot_path);
    out << profile::SweepSvg(points, analysis,
                             StrCat("kiln batch sweep: ", model_name, ", ", precision, ", ", gpu));
    KILN_CHECK(out.good(), "cannot write the plot ", plot_path);
    std::cout << "wrote " << plot_path << "\n";
  }
  if (!b.json_path.empty()) {
    nlohmann::json rows = nlohmann::json::array();
    for (size_t i = 0; i < points.size(); ++i) {
      const profile::SweepPoint& p = points[i];
      nlohmann::json row = {{"batch", p.batch}, {"ok", p.ok}};
      if (!p.ok) {
        row["error"] = p.error;
      } else {
        row.update({{"p50_ms", p.p50_ms},
                    {"p99_ms", p.p99_ms},
                    {"samples_per_s", p.samples_per_s},
                    {"throughput_gain", analysis.throughput_gain[i]},
                    {"latency_growth", analysis.latency_growth[i]},
                    {"weight_bytes", p.weight_bytes},
                    {"context_bytes", p.context_bytes},
                    {"device_bytes", p.device_bytes()},
                    {"build_seconds", p.build_seconds}});
        row.update(extras[i]);
      }
      rows.push_back(row);
    }
    auto batch_at = [&](int index) -> nlohmann::json {
      if (index < 0) return nullptr;
      return points[static_cast<size_t>(index)].batch;
    };
    nlohmann::json j = {{"model", b.model},
                        {"precision", precision},
                        {"gpu", gpu},
                        {"iterations", b.iterations},
                        {"warmup", std::max(b.warmup, 1)},
                        {"cuda_graph", true},
                        {"best_batch", batch_at(analysis.best)},
                        {"knee_batch", batch_at(analysis.knee)},
                        {"knee_definition", std::string(profile::kKneeDefinition)},
                        {"sweep", rows}};
    std::ofstream out(b.json_path);
    KILN_CHECK(out, "cannot write ", b.json_path);
    out << j.dump(2) << "\n";
  }
  // Failed batch sizes are rows of the report; the sweep fails only when
  // nothing could be measured.
  return analysis.succeeded > 0 ? 0 : 1;
}

#endif  // KILN_HAVE_CUDA

}  // namespace

int RunBenchMode(const BenchModeFlags& modes, const BenchBasics& b) {
  KILN_CHECK(!(modes.sweep_given && (modes.contexts_given || modes.threads_given)),
             "choose one of --sweep and --contexts");
  KILN_CHECK(b.iterations > 0 && b.warmup >= 0, "--iterations must be positive");
  if (modes.sweep_given || !modes.plot.empty()) {
    KILN_CHECK(modes.sweep_given, "--plot needs --sweep (the plot is of a batch-size sweep)");
    const std::vector<int64_t> batches = profile::ParseBatchList(modes.sweep);
    KILN_CHECK(b.batch == 0, "--sweep sets the batch size; drop --batch");
    KILN_CHECK(!b.profile, "--profile is not available with --sweep (profile one batch with --batch N)");
    KILN_CHECK(!IsEngineFile(b.model), "--sweep builds one engine per batch size from an ONNX model; ",
               b.model, " is a built engine with fixed shapes");
#ifdef KILN_HAVE_CUDA
    return RunSweep(b, batches, modes.plot);
#else
    (void)batches;
    Fail("`kiln bench --sweep` needs the CUDA backend; this kiln was built without CUDA (model: ",
         b.model, ")");
#endif
  }
  KILN_CHECK(modes.contexts_given, "--threads needs --contexts");
  KILN_CHECK(modes.contexts >= 1 && modes.contexts <= 1024, "--contexts must be between 1 and 1024, not ",
             modes.contexts);
  const int threads = modes.threads;
  KILN_CHECK(threads >= 1 && threads <= modes.contexts, "--threads must be between 1 and --contexts (",
             modes.contexts, "), not ", threads);
  KILN_CHECK(!b.profile, "--profile is not available with --contexts");
#ifdef KILN_HAVE_CUDA
  return RunBenchContexts(b, modes.contexts, threads);
#else
  Fail("`kiln bench --contexts` needs the CUDA backend; this kiln was built without CUDA (model: ",
       b.model, ")");
#endif
}

}  // namespace kiln::cli
