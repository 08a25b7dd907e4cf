// `kiln bench --ablation`: the textbook optimization ladder of continuous
// inference, measured one step on top of the previous with kiln::Pipeline
// (the same code, features switched on one by one; pipeline/ladder.h), the
// same batch count and inputs for every step, in one table. Then the
// end-to-end line: the pipeline fed pageable uint8 NHWC images (GPU
// preprocessing, best config) against the engine's device-only throughput.
#include "cli/bench_ablation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kiln/error.h"
#include "kiln/pipeline.h"
#include "pipeline/ladder.h"

#ifdef KILN_HAVE_CUDA
#include "cuda/cuda_check.h"
#include "kiln/engine.h"
#include "pipeline/scheduler.h"
#endif

namespace kiln::cli {

#ifdef KILN_HAVE_CUDA
namespace {

using Clock = std::chrono::steady_clock;

// Realistic output processing: per sample, softmax over its row of the first
// output and the top-5 classes formatted into a line, written to a sink (not
// stdout, so the terminal does not set the pace).
class TopFiveSink {
 public:
  void Consume(const Tensor& logits) {
    const int64_t rows = logits.rank() > 0 && logits.dim(0) > 0 ? logits.dim(0) : 1;
    const int64_t cols = logits.numel() / rows;
    std::vector<float> converted;
    const float* data = nullptr;
    if (logits.dtype() == DType::kFloat32) {
      data = logits.data<float>();
    } else {
      converted = logits.ToFloatVector();
      data = converted.data();
    }
    const int64_t k = std::min<int64_t>(5, cols);
    order_.resize(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows && cols > 0; ++r) {
      const float* row = data + r * cols;
      const float top = *std::max_element(row, row + cols);
      double sum = 0;
      for (int64_t i = 0; i < cols; ++i) sum += std::exp(static_cast<double>(row[i] - top));
      for (int64_t i = 0; i < cols; ++i) order_[static_cast<size_t>(i)] = i;
      std::partial_sort(order_.begin(), order_.begin() + k, order_.end(),
                        [&](int64_t a, int64_t b) { return row[a] > row[b]; });
      char buffer[64];
      std::snprintf(buffer, sizeof buffer, "sample %lld:", static_cast<long long>(samples_++));
      line_ = buffer;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t c = order_[static_cast<size_t>(i)];
        std::snprintf(buffer, sizeof buffer, " %lld (%.4f)", static_cast<long long>(c),
                      std::exp(static_cast<double>(row[c] - top)) / sum);
        line_ += buffer;
      }
      line_ += '\n';
      bytes_ += line_.size();
    }
  }
  size_t bytes() const { return bytes_; }

 private:
  std::vector<int64_t> order_;
  std::string line_;
  size_t bytes_ = 0;
  int64_t samples_ = 0;
};

struct StepResult {
  pipeline::LadderStep step;
  double ms = 0;  // For the timed (post-warm-up) batches.
  double samples_per_s = 0;
  size_t device_bytes = 0;
  size_t sink_bytes = 0;
  int64_t failed_batches = 0;
};

int WarmupBatches(int batches) { return std::clamp(batches / 8, 1, 8); }

// Runs `batches` batches through a pipeline and times the deliveries after
// the warm-up ones. `submit(pipeline, i)` submits batch i.
template <typename SubmitFn>
StepResult RunPipeline(const Engine& engine, const PipelineConfig& config, int batches, int64_t batch,
                       SubmitFn submit) {
  StepResult result;
  std::vector<Clock::time_point> delivered(static_cast<size_t>(batches));
  TopFiveSink sink;
  {
    auto pipeline = Pipeline::Create(engine, config, [&](const PipelineResult& r) {
      if (!r.ok()) {
        ++result.failed_batches;
      } else if (!r.outputs.empty()) {
        sink.Consume(r.outputs[0]);
      }
      delivered[static_cast<size_t>(r.sequence)] = Clock::now();
    });
    for (int i = 0; i < batches; ++i) submit(*pipeline, i);
    pipeline->Flush();
    result.device_bytes = engine.info().weight_bytes + pipeline->DeviceMemoryBytes();
  }
  const int warmup = WarmupBatches(batches);
  result.ms = std::chrono::duration<double, std::milli>(delivered.back() -
                                                        delivered[static_cast<size_t>(warmup - 1)])
                  .count();
  result.samples_per_s =
      result.ms > 0 ? static_cast<double>((batches - warmup) * batch) / (result.ms / 1e3) : 0;
  result.sink_bytes = sink.bytes();
  return result;
}

// The engine's own ceiling: inputs resident on the device, CUDA Graph
// replays back to back, in samples/s.
double DeviceOnlySamplesPerSecond(const Engine& engine, int iterations, int64_t batch) {
  DeviceBindings bindings(engine, 1);
  auto context = engine.CreateContext();
  CudaStream stream;
  for (int i = 0; i < 5; ++i) context->EnqueueGraph(bindings.inputs(), bindings.outputs(), stream.stream);
  CudaEvent start, stop;
  KILN_CUDA_CHECK(cudaEventRecord(start.event, stream.stream));
  for (int i = 0; i < iterations; ++i)
    context->EnqueueGraph(bindings.inputs(), bindings.outputs(), stream.stream);
  KILN_CUDA_CHECK(cudaEventRecord(stop.event, stream.stream));
  KILN_CUDA_CHECK(cudaEventSynchronize(stop.event));
  float ms = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event, stop.event));
  return ms > 0 ? static_cast<double>(iterations * batch) / (ms / 1e3) : 0;
}

nlohmann::json ConfigJson(const PipelineConfig& c) {
  return {{"slots", c.slots},           {"reuse_device_buffers", c.reuse_device_buffers},
          {"pinned_staging", c.pinned_staging}, {"overlap", c.overlap},
          {"async_output", c.async_output},     {"cuda_graph", c.cuda_graph},
          {"contexts", c.contexts}};
}

std::string Speedup(double x) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << x << "x";
  return s.str();
}

}  // namespace

int RunBenchAblation(const BenchBasics& basics, int batches) {
  KILN_CHECK(!IsEngineFile(basics.model), "--ablation builds an FP32 and an FP16 engine (step 4): give the "
             "ONNX model, not the engine file ", basics.model);
  KILN_CHECK(batches >= 4, "--batches must be at least 4 (the first ones are warm-up), got ", batches);
  const int64_t batch = basics.batch > 0 ? basics.batch : 32;
  EngineFlags flags = basics.flags;
  if (flags.shapes.empty()) {
    // Every input's first dim is the batch; other dynamic dims become 1.
    std::unique_ptr<Model> model = Model::Load(basics.model);
    for (const TensorDesc& d : model->inputs()) {
      KILN_CHECK(!d.dims.empty(), "--ablation: input '", d.name, "' is a scalar");
      std::string spec = d.name + "=";
      for (size_t i = 0; i < d.dims.size(); ++i) {
        const int64_t x = i == 0 ? batch : (d.dims[i] < 0 ? 1 : d.dims[i]);
        spec += (i ? "x" : "") + std::to_string(x);
      }
      flags.shapes.push_back(spec);
    }
  }
  flags.fp16 = flags.bf16 = flags.tf32 = false;
  std::cout << "ablation: building the FP32 engine...\n" << std::flush;
  std::unique_ptr<Engine> fp32 = LoadOrBuildEngine(basics.model, flags);
  flags.fp16 = true;
  std::cout << "ablation: building the FP16 engine...\n" << std::flush;
  std::unique_ptr<Engine> fp16 = LoadOrBuildEngine(basics.model, flags);
  KILN_CHECK(!fp32->inputs().empty() && !fp32->inputs()[0].dims.empty() &&
                 fp32->inputs()[0].dims[0] == batch,
             "--ablation: the engine's first input is not batched by ", batch);

  // The same inputs for every step: a few distinct batches in pageable memory.
  const int distinct = std::min(batches, 4);
  std::mt19937 rng(0);
  std::vector<std::vector<Tensor>> inputs(static_cast<size_t>(distinct));
  for (auto& set : inputs)
    for (const TensorDesc& d : fp32->inputs()) {
      set.emplace_back(d.dtype, d.dims);
      FillRandom(d, set.back().raw_data(), rng);
    }
  for (size_t i = 0; i < fp32->inputs().size(); ++i)
    KILN_CHECK(fp16->inputs()[i].dtype == fp32->inputs()[i].dtype &&
                   fp16->inputs()[i].dims == fp32->inputs()[i].dims,
               "--ablation: the FP16 engine's input '", fp16->inputs()[i].name, "' differs from FP32's");

  const int warmup = WarmupBatches(batches);
  std::cout << "ablation: " << basics.model << ", batch " << batch << ", " << batches
            << " batches per step, timed: the last " << (batches - warmup) << " (after " << warmup
            << " warm-up), output processing: softmax + top-5 per sample into a string sink\n\n";
  std::vector<StepResult> results;
  for (const pipeline::LadderStep& step : pipeline::OptimizationLadder(3, 2)) {
    StepResult r;
    if (!step.skipped) {
      const Engine& engine = step.fp16 ? *fp16 : *fp32;
      r = RunPipeline(engine, step.config, batches, batch, [&](Pipeline& p, int i) {
        p.Submit(inputs[static_cast<size_t>(i % distinct)]);
      });
    }
    r.step = step;
    results.push_back(r);
  }

  // The table.
  const double baseline = results.front().samples_per_s;
  std::cout << std::left << std::setw(5) << "step" << std::setw(15) << "feature" << std::right
            << std::setw(12) << "time (ms)" << std::setw(13) << "samples/s" << std::setw(10) << "vs prev"
            << std::setw(10) << "vs base" << std::setw(14) << "device mem" << "  adds\n";
  nlohmann::json steps = nlohmann::json::array();
  double previous = 0;
  const StepResult* best = nullptr;
  int64_t failed_batches = 0;
  for (const StepResult& r : results) {
    std::cout << std::left << std::setw(5) << r.step.step << std::setw(15) << r.step.name << std::right;
    nlohmann::json j = {{"step", r.step.step},   {"name", r.step.name}, {"adds", r.step.adds},
                        {"fp16", r.step.fp16},   {"skipped", r.step.skipped},
                        {"config", ConfigJson(r.step.config)}};
    if (r.step.skipped) {
      std::cout << "  skipped (" << r.step.skip_reason << ")\n";
      j["skip_reason"] = r.step.skip_reason;
      steps.push_back(j);
      continue;
    }
    const double vs_prev = previous > 0 ? r.samples_per_s / previous : 1.0;
    const double vs_base = baseline > 0 ? r.samples_per_s / baseline : 1.0;
    std::cout << std::fixed << std::setprecision(2) << std::setw(12) << r.ms << std::setprecision(1)
              << std::setw(13) << r.samples_per_s << std::setw(10) << Speedup(vs_prev) << std::setw(10)
              << Speedup(vs_base) << std::setw(14) << HumanBytes(static_cast<double>(r.device_bytes))
              << "  " << r.step.adds << "\n";
    if (r.failed_batches) std::cout << "     WARNING: " << r.failed_batches << " batches failed\n";
    failed_batches += r.failed_batches;
    j.update({{"time_ms", r.ms},
              {"timed_batches", batches - warmup},
              {"samples_per_s", r.samples_per_s},
              {"speedup_vs_previous", vs_prev},
              {"speedup_vs_baseline", vs_base},
              {"device_bytes", r.device_bytes},
              {"sink_bytes", r.sink_bytes},
              {"failed_batches", r.failed_batches}});
    steps.push_back(j);
    previous = r.samples_per_s;
    if (!best || r.samples_per_s > best->samples_per_s) best = &r;
  }

  // End to end: pageable uint8 NHWC images, GPU preprocessing, the best config.
  KILN_CHECK(best != nullptr, "--ablation: no step ran");
  nlohmann::json end_to_end;
  const Engine& best_engine = best->step.fp16 ? *fp16 : *fp32;
  const PipelineConfig& best_config = best->step.config;
  std::string why_not;
  pipeline::ImageGeometry geometry;
  try {
    geometry = pipeline::ImageInputGeometry(best_engine.inputs(), best_config.mean, best_config.std);
  } catch (const Error& e) {
    why_not = e.what();
  }
  if (why_not.empty()) {
    std::vector<std::vector<uint8_t>> images(static_cast<size_t>(distinct));
    for (auto& image : images) {
      image.resize(geometry.image_bytes());
      for (uint8_t& b : image) b = static_cast<uint8_t>(rng() & 0xff);
    }
    StepResult r = RunPipeline(best_engine, best_config, batches, batch, [&](Pipeline& p, int i) {
      const auto& image = images[static_cast<size_t>(i % distinct)];
      p.SubmitImages(image.data(), image.size());
    });
    failed_batches += r.failed_batches;
    const double device_only = DeviceOnlySamplesPerSecond(best_engine, batches, batch);
    const double ratio = device_only > 0 ? r.samples_per_s / device_only : 0;
    std::cout << "\nend-to-end: " << std::fixed << std::setprecision(1) << r.samples_per_s
              << " samples/s from pageable uint8 NHWC images (GPU preprocessing, step " << best->step.step
              << " config) = " << 100 * ratio << "% of the engine's device-only " << device_only
              << " samples/s (inputs resident, CUDA Graph replays back to back), batch " << batch
              << " (target >= 95%)\n";
    end_to_end = {{"samples_per_s", r.samples_per_s},
                  {"device_only_samples_per_s", device_only},
                  {"ratio", ratio},
                  {"config_step", best->step.step},
                  {"fp16", best->step.fp16},
                  {"failed_batches", r.failed_batches}};
  } else {
    std::cout << "\nend-to-end: skipped (" << why_not << ")\n";
    end_to_end = {{"skipped", true}, {"reason", why_not}};
  }

  if (!basics.json_path.empty()) {
    nlohmann::json j = {{"model", basics.model},
                        {"gpu", fp32->info().gpu_name},
                        {"batch", batch},
                        {"batches", batches},
                        {"warmup_batches", warmup},
                        {"steps", steps},
                        {"end_to_end", end_to_end}};
    std::ofstream out(basics.json_path);
    KILN_CHECK(out, "cannot write ", basics.json_path);
    out << j.dump(2) << "\n";
  }
  return failed_batches ? 1 : 0;
}

#else

int RunBenchAblation(const BenchBasics&, int) {
  Fail("this kiln was built without CUDA; `kiln bench --ablation` needs a GPU");
}

#endif

}  // namespace kiln::cli
