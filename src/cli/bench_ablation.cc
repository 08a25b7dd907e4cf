// `kiln bench --ablation`: the textbook optimization ladder of continuous
// inference, measured one step on top of the previous with kiln::Pipeline
// (the same code, features switched on one by one; pipeline/ladder.h), the
// same batch count and inputs for every step, in one table. Step 9
// (optimization profiles) needs batches of different sizes: it runs a mixed
// stream of batch sizes on an engine with two profiles and compares with
// step 8's config on the same stream, where the static engine pads every
// batch to the full size. Then the end-to-end line: the pipeline fed pageable
// uint8 NHWC images (best config; an engine that takes the images itself,
// normalization fused into its first layer, where the model allows) against
// that engine's device-only throughput.
#include "cli/bench_ablation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <cstring>
#include <iostream>
#include <map>
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
  double vs_previous_override = -1;  // Step 9: against step 8 on the same (mixed) stream.
};

int WarmupBatches(int batches) { return std::clamp(batches / 8, 1, 8); }

// Runs `samples.size()` batches through a pipeline and times the deliveries
// after the first `warmup`. `submit(pipeline, i)` submits batch i, which
// carries samples[i] real samples.
template <typename SubmitFn>
StepResult RunPipeline(const Engine& engine, PipelineConfig config, int warmup,
                       const std::vector<int64_t>& samples, SubmitFn submit, const std::string& timeline = "") {
  config.record_timeline = !timeline.empty();
  const int batches = static_cast<int>(samples.size());
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
    if (!timeline.empty()) pipeline->WriteTimeline(timeline);
    result.device_bytes = engine.info().weight_bytes + pipeline->DeviceMemoryBytes();
  }
  result.ms = std::chrono::duration<double, std::milli>(delivered.back() -
                                                        delivered[static_cast<size_t>(warmup - 1)])
                  .count();
  int64_t timed_samples = 0;
  for (int i = warmup; i < batches; ++i) timed_samples += samples[static_cast<size_t>(i)];
  result.samples_per_s = result.ms > 0 ? static_cast<double>(timed_samples) / (result.ms / 1e3) : 0;
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

// Step 9's stream: batch sizes as a server's batcher or a video pipeline
// produces them, repeated.
std::vector<int64_t> MixedBatchSizes(int64_t batch) {
  std::vector<int64_t> sizes;
  for (int64_t s : {batch, batch / 2, batch / 8, int64_t{1}, batch / 4, batch, batch / 16, batch * 3 / 4})
    if (s >= 1) sizes.push_back(s);
  return sizes;
}

// Two profiles over the batch dim of every input: small batches (tuned at
// batch/8) and large ones (tuned at the full batch). The first covering
// profile wins, so sizes up to batch/2 run on the small one.
std::vector<OptimizationProfile> MixedBatchProfiles(const std::vector<TensorDesc>& inputs, int64_t batch) {
  auto with_batch = [](std::vector<int64_t> dims, int64_t n) {
    dims[0] = n;
    return dims;
  };
  std::vector<OptimizationProfile> profiles(2);
  for (const TensorDesc& d : inputs) {
    profiles[0].inputs[d.name] = {with_batch(d.dims, 1), with_batch(d.dims, std::max<int64_t>(1, batch / 8)),
                                  with_batch(d.dims, std::max<int64_t>(1, batch / 2))};
    profiles[1].inputs[d.name] = {with_batch(d.dims, 1), with_batch(d.dims, batch), with_batch(d.dims, batch)};
  }
  return profiles;
}

std::string Speedup(double x) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << x << "x";
  return s.str();
}

}  // namespace

int RunBenchAblation(const BenchBasics& basics, const AblationFlags& ablation) {
  const int batches = ablation.batches;
  auto timeline = [&](int step) {
    return ablation.timeline.empty() ? std::string() : StrCat(ablation.timeline, "_step", step, ".json");
  };
  KILN_CHECK(!IsEngineFile(basics.model), "--ablation builds an FP32 and an FP16 engine (step 4): give the "
             "ONNX model, not the engine file ", basics.model);
  KILN_CHECK(batches >= 4, "--batches must be at least 4 (the first ones are warm-up), got ", batches);
  const int64_t batch = basics.batch > 0 ? basics.batch : 32;
  EngineFlags flags = basics.flags;
  const std::string image_input = ParseImageInputSpec(flags.image_input).name;
  auto shape_spec = [](const std::string& name, const std::vector<int64_t>& dims) {
    std::string spec = name + "=";
    for (size_t i = 0; i < dims.size(); ++i) spec += (i ? "x" : "") + std::to_string(dims[i]);
    return spec;
  };
  if (flags.shapes.empty()) {
    // Every input's first dim is the batch; other dynamic dims become 1 (an
    // --image-input binding is [N, H, W, C]).
    std::unique_ptr<Model> model = Model::Load(basics.model);
    for (const TensorDesc& d : model->inputs()) {
      KILN_CHECK(!d.dims.empty(), "--ablation: input '", d.name, "' is a scalar");
      std::vector<int64_t> dims;
      for (size_t i = 0; i < d.dims.size(); ++i) dims.push_back(i == 0 ? batch : (d.dims[i] < 0 ? 1 : d.dims[i]));
      flags.shapes.push_back(shape_spec(d.name, d.name == image_input ? ImageBindingDims(dims) : dims));
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
            << " warm-up), output processing: softmax + top-5 per sample into a string sink\n";
  if (!ablation.timeline.empty())
    std::cout << "timelines: " << ablation.timeline << "_step<N>.json (recording on: numbers include its "
              << "small cost)\n";
  std::cout << "\n";
  const std::vector<int64_t> full_batches(static_cast<size_t>(batches), batch);
  std::vector<StepResult> results;
  nlohmann::json mixed;  // Step 9's workload and its step-8 reference.
  StepResult mixed_static;
  for (const pipeline::LadderStep& step : pipeline::OptimizationLadder(3, 2)) {
    StepResult r;
    if (step.profiles) {
      // The mixed stream: every size seen once in the warm-up (new shapes
      // are specialized on first use), the same batches for both engines.
      const std::vector<int64_t> sizes = MixedBatchSizes(batch);
      const int cycle = static_cast<int>(sizes.size());
      const int mixed_batches = std::max(batches, 4 * cycle);
      std::vector<int64_t> real(static_cast<size_t>(mixed_batches));
      for (int i = 0; i < mixed_batches; ++i) real[static_cast<size_t>(i)] = sizes[static_cast<size_t>(i % cycle)];
      std::map<int64_t, std::vector<Tensor>> exact;  // size -> its rows of inputs[0]
      for (int64_t n : sizes) {
        if (exact.count(n)) continue;  // Sizes repeat in the stream.
        for (const Tensor& t : inputs[0]) {  // The first n rows.
          std::vector<int64_t> dims = t.dims();
          dims[0] = n;
          Tensor rows(t.dtype(), dims);
          std::memcpy(rows.raw_data(), t.raw_data(), rows.nbytes());
          exact[n].push_back(std::move(rows));
        }
      }
      std::cout << "ablation: step 9, building the FP16 engine with two optimization profiles...\n"
                << std::flush;
      BuildConfig build = MakeBuildConfig(flags);
      build.profiles = MixedBatchProfiles(fp16->inputs(), batch);
      for (const TensorDesc& d : fp16->inputs()) build.shapes.erase(d.name);
      std::unique_ptr<Engine> profiled = Engine::Build(basics.model, build);
      // Step 8 on the mixed stream: the static engine needs full batches, so
      // each batch is padded (its real rows + the rest of a full batch).
      mixed_static = RunPipeline(*fp16, step.config, cycle, real, [&](Pipeline& p, int) {
        p.Submit(inputs[0]);
      }, ablation.timeline.empty() ? "" : StrCat(ablation.timeline, "_step8_mixed.json"));
      r = RunPipeline(*profiled, step.config, cycle, real, [&](Pipeline& p, int i) {
        p.Submit(exact[real[static_cast<size_t>(i)]]);
      }, timeline(step.step));
      r.vs_previous_override = mixed_static.samples_per_s > 0 ? r.samples_per_s / mixed_static.samples_per_s : 0;
      mixed = {{"batch_sizes", sizes},
               {"batches", mixed_batches},
               {"warmup_batches", cycle},
               {"profiles", {DescribeProfile(build.profiles[0]), DescribeProfile(build.profiles[1])}},
               {"step8_padded_samples_per_s", mixed_static.samples_per_s},
               {"step8_padded_time_ms", mixed_static.ms},
               {"step9_samples_per_s", r.samples_per_s}};
    } else if (!step.skipped) {
      const Engine& engine = step.fp16 ? *fp16 : *fp32;
      r = RunPipeline(engine, step.config, warmup, full_batches, [&](Pipeline& p, int i) {
        p.Submit(inputs[static_cast<size_t>(i % distinct)]);
      }, timeline(step.step));
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
    const bool own_stream = r.step.profiles;  // Step 9 runs the mixed stream: no baseline ratio.
    const double vs_prev = own_stream ? r.vs_previous_override : previous > 0 ? r.samples_per_s / previous : 1.0;
    const double vs_base = own_stream ? 0 : baseline > 0 ? r.samples_per_s / baseline : 1.0;
    std::cout << std::fixed << std::setprecision(2) << std::setw(12) << r.ms << std::setprecision(1)
              << std::setw(13) << r.samples_per_s << std::setw(10) << Speedup(vs_prev) << std::setw(10)
              << (own_stream ? std::string("-") : Speedup(vs_base)) << std::setw(14)
              << HumanBytes(static_cast<double>(r.device_bytes)) << "  " << r.step.adds << "\n";
    if (own_stream)
      std::cout << "     (mixed batch sizes " << mixed["batch_sizes"].dump() << "; step 8's config on the "
                << "same stream, padded to " << batch << ": " << std::setprecision(1)
                << mixed_static.samples_per_s << " samples/s)\n";
    if (r.failed_batches) std::cout << "     WARNING: " << r.failed_batches << " batches failed\n";
    failed_batches += r.failed_batches + (own_stream ? mixed_static.failed_batches : 0);
    if (own_stream) j["mixed_stream"] = mixed;
    j.update({{"time_ms", r.ms},
              {"timed_batches", own_stream ? mixed["batches"].get<int>() - mixed["warmup_batches"].get<int>()
                                           : batches - warmup},
              {"samples_per_s", r.samples_per_s},
              {"speedup_vs_previous", vs_prev},
              {"speedup_vs_baseline", vs_base},
              {"device_bytes", r.device_bytes},
              {"sink_bytes", r.sink_bytes},
              {"failed_batches", r.failed_batches}});
    steps.push_back(j);
    previous = r.samples_per_s;
    // The end-to-end run compares with CUDA Graph replays, so it uses the
    // fastest step that replays graphs too (any step if none does).
    const bool better = !best || (r.step.config.cuda_graph && !best->step.config.cuda_graph) ||
                        (r.step.config.cuda_graph == best->step.config.cuda_graph &&
                         r.samples_per_s > best->samples_per_s);
    if (!own_stream && better) best = &r;
  }

  // End to end: pageable uint8 NHWC images, the best graph-replaying
  // config; twice the batches of a step (cheap at FP16) for a steadier
  // ratio. The engine takes the images itself where it can: the best step's
  // precision, built with the model's image input as a uint8 binding
  // (BuildConfig::image_input: the normalization fused into its first layer),
  // and the device-only number is that same engine's graph replays with its
  // uint8 input resident. Otherwise the pipeline normalizes for the float engine.
  KILN_CHECK(best != nullptr, "--ablation: no step ran");
  nlohmann::json end_to_end;
  const Engine* e2e_engine = best->step.fp16 ? fp16.get() : fp32.get();
  const PipelineConfig& best_config = best->step.config;
  std::unique_ptr<Engine> image_engine;
  std::string preprocessing = "GPU preprocessing: the pipeline's normalize kernel, then the float-input engine";
  std::string image_input_mode = "pipeline";
  if (!image_input.empty()) {
    preprocessing = "the engine's image input (--image-input)";
    image_input_mode = "engine";
  } else if (e2e_engine->inputs().size() == 1 && e2e_engine->inputs()[0].dims.size() == 4 &&
             IsFloatingPoint(e2e_engine->inputs()[0].dtype)) {
    const std::string name = e2e_engine->inputs()[0].name;
    EngineFlags image_flags = flags;
    image_flags.fp16 = best->step.fp16;
    image_flags.image_input = name;  // PipelineConfig's default mean/std: the same normalization.
    image_flags.shapes = {shape_spec(name, ImageBindingDims(e2e_engine->inputs()[0].dims))};
    std::cout << "\nablation: building the " << (best->step.fp16 ? "FP16" : "FP32")
              << " engine with a uint8 image input for the end-to-end run...\n" << std::flush;
    try {
      image_engine = LoadOrBuildEngine(basics.model, image_flags);
      e2e_engine = image_engine.get();
      bool standalone = false;
      for (const LayerInfo& l : image_engine->info().layers) standalone |= l.op_type == "KilnNormalizeImage";
      preprocessing = standalone ? "uint8 image input, normalized by the engine's own layer"
                                 : "uint8 image input, normalization fused into the engine's first layer";
      image_input_mode = standalone ? "engine_layer" : "engine_fused";
    } catch (const Error& e) {
      std::cout << "ablation: no image-input engine (" << e.what() << "); the pipeline normalizes\n";
    }
  }
  std::string why_not;
  pipeline::ImageGeometry geometry;
  try {
    geometry = pipeline::ImageInputGeometry(e2e_engine->inputs(), best_config.mean, best_config.std);
  } catch (const Error& e) {
    why_not = e.what();
  }
  if (why_not.empty()) {
    std::vector<std::vector<uint8_t>> images(static_cast<size_t>(distinct));
    for (auto& image : images) {
      image.resize(geometry.image_bytes());
      for (uint8_t& b : image) b = static_cast<uint8_t>(rng() & 0xff);
    }
    const std::vector<int64_t> e2e_batches(static_cast<size_t>(2 * batches), batch);
    StepResult r = RunPipeline(*e2e_engine, best_config, warmup, e2e_batches, [&](Pipeline& p, int i) {
      const auto& image = images[static_cast<size_t>(i % distinct)];
      p.SubmitImages(image.data(), image.size());
    });
    failed_batches += r.failed_batches;
    const double device_only = DeviceOnlySamplesPerSecond(*e2e_engine, 2 * batches, batch);
    const double ratio = device_only > 0 ? r.samples_per_s / device_only : 0;
    std::cout << "\nend-to-end: " << std::fixed << std::setprecision(1) << r.samples_per_s
              << " samples/s from pageable uint8 NHWC images (" << preprocessing << "; step "
              << best->step.step << " config) = " << 100 * ratio << "% of that engine's device-only "
              << device_only << " samples/s (its inputs resident, CUDA Graph replays back to back), batch "
              << batch << " (target >= 95%)\n";
    end_to_end = {{"samples_per_s", r.samples_per_s},
                  {"device_only_samples_per_s", device_only},
                  {"ratio", ratio},
                  {"config_step", best->step.step},
                  {"batches", 2 * batches},
                  {"fp16", best->step.fp16},
                  {"image_input", image_input_mode},
                  {"preprocessing", preprocessing},
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

int RunBenchAblation(const BenchBasics&, const AblationFlags&) {
  Fail("this kiln was built without CUDA; `kiln bench --ablation` needs a GPU");
}

#endif

}  // namespace kiln::cli
