// `kiln bench`: a trtexec-style performance report for an engine (or an ONNX
// model, built first): throughput, latency percentiles, GPU compute time,
// host↔device copy times, enqueue time, kernel launches per inference, and
// optionally a per-layer profile.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/bench_ablation.h"
#include "cli/cli_util.h"

#ifdef KILN_HAVE_CUDA
#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#endif

namespace kiln::cli {
namespace {

struct BenchOptions {
  std::string model;
  EngineFlags flags;
  int64_t batch = 0;
  int iterations = 200;
  int warmup = 20;
  bool cuda_graph = false;
  bool profile = false;
  std::string json_path;
};

#ifdef KILN_HAVE_CUDA
using cuda::DeviceBuffer;
using cuda::PinnedBuffer;

int RunBench(const BenchOptions& o) {
  EngineFlags flags = o.flags;
  KILN_CHECK(!IsEngineFile(o.model) || flags.image_input.empty(), o.model,
             " is a built engine: its inputs were fixed by `kiln build` (--image-input goes there)");
  if (o.batch > 0 && !IsEngineFile(o.model) && flags.shapes.empty()) {
    // --batch on an ONNX model: every input's first dim (an image input's
    // binding is [N, H, W, C]).
    const std::string image_input = ParseImageInputSpec(flags.image_input).name;
    std::unique_ptr<Model> model = Model::Load(o.model);
    for (const TensorDesc& d : model->inputs()) {
      std::vector<int64_t> dims = d.dims;
      KILN_CHECK(!dims.empty(), "--batch: input '", d.name, "' is a scalar");
      dims[0] = o.batch;
      for (auto& x : dims)
        if (x < 0) x = 1;
      if (d.name == image_input) dims = ImageBindingDims(dims);
      std::string spec = d.name + "=";
      for (size_t i = 0; i < dims.size(); ++i) spec += (i ? "x" : "") + std::to_string(dims[i]);
      flags.shapes.push_back(spec);
    }
  }
  InputShapes engine_shapes;  // An engine built with --profile: --shapes picks the shape.
  if (IsEngineFile(o.model))
    for (const std::string& spec : std::exchange(flags.shapes, {})) engine_shapes.insert(ParseShapeSpec(spec));
  std::unique_ptr<Engine> engine = LoadOrBuildEngine(o.model, flags);
  std::unique_ptr<ExecutionContext> context = engine->CreateContext();
  if (!engine_shapes.empty()) context->SetInputShapes(engine_shapes);
  if (o.batch > 0 && !context->CurrentInputs().empty())
    KILN_CHECK(context->CurrentInputs()[0].dims.at(0) == o.batch, "the engine was built for batch ",
               context->CurrentInputs()[0].dims[0], ", not ", o.batch, "; rebuild with --shapes");
  PrintEngineSummary(*engine);
  const int64_t batch = context->CurrentInputs().empty() || context->CurrentInputs()[0].dims.empty()
                            ? 1
                            : context->CurrentInputs()[0].dims[0];

  std::vector<std::unique_ptr<DeviceBuffer>> d_in, d_out;
  std::vector<std::unique_ptr<PinnedBuffer>> h_in, h_out;
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  std::mt19937 rng(0);
  size_t in_bytes = 0, out_bytes = 0;
  for (const TensorDesc& d : context->CurrentInputs()) {
    size_t bytes = d.nbytes();
    in_bytes += bytes;
    h_in.push_back(std::make_unique<PinnedBuffer>(bytes));
    FillRandom(d, h_in.back()->ptr, rng);
    d_in.push_back(std::make_unique<DeviceBuffer>(bytes));
    KILN_CUDA_CHECK(cudaMemcpy(d_in.back()->ptr, h_in.back()->ptr, bytes, cudaMemcpyHostToDevice));
    in_ptrs.push_back(d_in.back()->ptr);
  }
  for (const TensorDesc& d : context->CurrentOutputs()) {
    size_t bytes = d.nbytes();
    out_bytes += bytes;
    h_out.push_back(std::make_unique<PinnedBuffer>(bytes));
    d_out.push_back(std::make_unique<DeviceBuffer>(bytes));
    out_ptrs.push_back(d_out.back()->ptr);
  }
  cudaStream_t stream;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto enqueue = [&] {
    if (o.cuda_graph) {
      context->EnqueueGraph(in_ptrs, out_ptrs, stream);
    } else {
      context->Enqueue(in_ptrs, out_ptrs, stream);
    }
  };
  for (int i = 0; i < o.warmup; ++i) enqueue();
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));

  cudaEvent_t e0, e1, e2, e3;
  for (cudaEvent_t* e : {&e0, &e1, &e2, &e3}) KILN_CUDA_CHECK(cudaEventCreate(e));
  std::vector<double> h2d, compute, d2h, latency, enqueue_ms;
  for (int it = 0; it < o.iterations; ++it) {
    KILN_CUDA_CHECK(cudaEventRecord(e0, stream));
    for (size_t i = 0; i < d_in.size(); ++i)
      KILN_CUDA_CHECK(cudaMemcpyAsync(d_in[i]->ptr, h_in[i]->ptr, d_in[i]->bytes,
                                      cudaMemcpyHostToDevice, stream));
    KILN_CUDA_CHECK(cudaEventRecord(e1, stream));
    auto t0 = std::chrono::steady_clock::now();
    enqueue();
    auto t1 = std::chrono::steady_clock::now();
    KILN_CUDA_CHECK(cudaEventRecord(e2, stream));
    for (size_t i = 0; i < d_out.size(); ++i)
      KILN_CUDA_CHECK(cudaMemcpyAsync(h_out[i]->ptr, d_out[i]->ptr, d_out[i]->bytes,
                                      cudaMemcpyDeviceToHost, stream));
    KILN_CUDA_CHECK(cudaEventRecord(e3, stream));
    KILN_CUDA_CHECK(cudaEventSynchronize(e3));
    float a, b, c, total;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&a, e0, e1));
    KILN_CUDA_CHECK(cudaEventElapsedTime(&b, e1, e2));
    KILN_CUDA_CHECK(cudaEventElapsedTime(&c, e2, e3));
    KILN_CUDA_CHECK(cudaEventElapsedTime(&total, e0, e3));
    h2d.push_back(a);
    compute.push_back(b);
    d2h.push_back(c);
    latency.push_back(total);
    enqueue_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  // Throughput: inferences back to back on the device (inputs resident).
  KILN_CUDA_CHECK(cudaEventRecord(e0, stream));
  for (int it = 0; it < o.iterations; ++it) enqueue();
  KILN_CUDA_CHECK(cudaEventRecord(e1, stream));
  KILN_CUDA_CHECK(cudaEventSynchronize(e1));
  float span = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&span, e0, e1));
  for (cudaEvent_t e : {e0, e1, e2, e3}) cudaEventDestroy(e);
  const double per_inference_ms = span / o.iterations;
  const double qps = 1e3 / per_inference_ms;

  // Every output element must have been written with a finite value.
  int64_t non_finite = 0;
  for (size_t i = 0; i < h_out.size(); ++i) {
    const TensorDesc& d = context->CurrentOutputs()[i];
    Tensor t(d.dtype, d.dims);
    std::memcpy(t.raw_data(), h_out[i]->ptr, t.nbytes());
    if (!IsFloatingPoint(d.dtype)) continue;
    for (int64_t k = 0; k < t.numel(); ++k)
      if (!std::isfinite(t.GetAsDouble(k))) ++non_finite;
  }

  Percentiles pl = Summarize(latency), pc = Summarize(compute), ph = Summarize(h2d),
              pd = Summarize(d2h), pe = Summarize(enqueue_ms);
  const int launches = o.cuda_graph ? context->GraphKernelNodes() : engine->info().kernel_launches;
  std::cout << "bench: batch " << batch << ", " << o.iterations << " iterations"
            << (o.cuda_graph ? ", CUDA Graph replay" : ", stream enqueue") << "\n"
            << std::fixed << std::setprecision(1) << "  throughput: " << qps << " inferences/s, "
            << qps * static_cast<double>(batch) << " samples/s (device-resident inputs, "
            << std::setprecision(4) << per_inference_ms << " ms per inference)\n";
  PrintPercentiles("latency (H2D+GPU+D2H)", pl);
  PrintPercentiles("GPU compute", pc);
  PrintPercentiles("H2D copy", ph);
  PrintPercentiles("D2H copy", pd);
  PrintPercentiles("enqueue (host)", pe);
  std::cout << "  kernel launches per inference: " << launches
            << (o.cuda_graph ? " (kernel nodes in the captured graph)" : " (planned)") << "\n"
            << "  context device memory: " << HumanBytes(static_cast<double>(context->DeviceMemoryBytes()))
            << ", input " << HumanBytes(static_cast<double>(in_bytes)) << ", output "
            << HumanBytes(static_cast<double>(out_bytes)) << "\n";
  if (non_finite) std::cout << "  WARNING: " << non_finite << " non-finite output values\n";

  nlohmann::json layers = nlohmann::json::array();
  if (o.profile) {
    std::vector<double> times = context->ProfileLayers(in_ptrs, out_ptrs, stream, 20);
    double total = 0;
    for (double t : times) total += t;
    std::cout << "\nper-layer profile (median of 20, ms; sum " << std::setprecision(4) << total << " ms):\n";
    std::cout << "  " << std::left << std::setw(40) << "layer" << std::setw(18) << "op" << std::right
              << std::setw(10) << "ms" << std::setw(8) << "%" << std::setw(10) << "TFLOP/s"
              << std::setw(10) << "GB/s" << "  tactic\n";
    const auto& info = engine->info().layers;
    for (size_t i = 0; i < times.size() && i < info.size(); ++i) {
      const LayerInfo& l = info[i];
      if (l.alias) continue;
      double tflops = times[i] > 0 ? l.flops / (times[i] * 1e9) : 0;
      double gbs = times[i] > 0 ? l.bytes / (times[i] * 1e6) : 0;
      std::cout << "  " << std::left << std::setw(40) << l.name.substr(0, 39) << std::setw(18)
                << l.op_type.substr(0, 17) << std::right << std::setprecision(4) << std::setw(10)
                << times[i] << std::setprecision(1) << std::setw(8) << 100 * times[i] / total
                << std::setprecision(1) << std::setw(10) << tflops << std::setw(10) << gbs << "  "
                << l.tactic << "\n";
      layers.push_back({{"name", l.name}, {"op", l.op_type}, {"ms", times[i]}, {"flops", l.flops},
                        {"bytes", l.bytes}, {"tactic", l.tactic}});
    }
  }
  KILN_CUDA_CHECK(cudaStreamDestroy(stream));

  if (!o.json_path.empty()) {
    nlohmann::json j = {
        {"model", o.model},
        {"precision", PrecisionName(engine->info().precision)},
        {"gpu", engine->info().gpu_name},
        {"batch", batch},
        {"iterations", o.iterations},
        {"cuda_graph", o.cuda_graph},
        {"throughput_qps", qps},
        {"throughput_samples_per_s", qps * static_cast<double>(batch)},
        {"latency_ms", ToJson(pl)},
        {"gpu_compute_ms", ToJson(pc)},
        {"h2d_ms", ToJson(ph)},
        {"d2h_ms", ToJson(pd)},
        {"enqueue_ms", ToJson(pe)},
        {"kernel_launches", launches},
        {"weight_bytes", engine->info().weight_bytes},
        {"activation_bytes", engine->info().activation_bytes},
        {"build_seconds", engine->info().build_seconds},
        {"non_finite_outputs", non_finite},
        {"layers", layers}};
    std::ofstream out(o.json_path);
    KILN_CHECK(out, "cannot write ", o.json_path);
    out << j.dump(2) << "\n";
  }
  return non_finite ? 1 : 0;
}
#endif

}  // namespace

void AddBenchCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure an engine's throughput and latency on the GPU");
  cmd->add_option("model", o->model, "Engine (.kiln) or ONNX model")->required();
  AddEngineFlags(cmd, o->flags);
  cmd->add_option("--batch", o->batch, "Batch size (ONNX models: sets every input's first dim)");
  cmd->add_option("--iterations", o->iterations, "Timed iterations")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Warm-up iterations")->capture_default_str();
  cmd->add_flag("--cuda-graph", o->cuda_graph, "Replay each inference as a CUDA Graph");
  cmd->add_flag("--profile", o->profile, "Per-layer time, TFLOP/s and GB/s");
  cmd->add_option("--json", o->json_path, "Also write the report as JSON to this file");
  auto modes = std::make_shared<BenchModeFlags>();  // --sweep, --contexts (bench_sweep.cc)
  AddBenchModeFlags(cmd, *modes);
  auto ablation = std::make_shared<AblationFlags>();  // --ablation (bench_ablation.cc)
  cmd->add_flag("--ablation", ablation->on, "The pipeline optimization ladder, step by step, in one table");
  cmd->add_option("--batches", ablation->batches, "Batches per --ablation step")->capture_default_str();
  cmd->add_option("--timeline", ablation->timeline,
                  "With --ablation: record each step's timeline (host threads, copy/compute streams) as "
                  "Chrome trace JSON <PREFIX>_step<N>.json for ui.perfetto.dev (recording costs a little)");
  cmd->callback([o, modes, ablation, &exit_code] {
    if (ablation->on) {
      exit_code = RunBenchAblation({o->model, o->flags, o->batch, o->iterations, o->warmup,
                                    o->cuda_graph, o->profile, o->json_path},
                                   *ablation);
      return;
    }
    if (modes->active()) {
      exit_code = RunBenchMode(*modes, {o->model, o->flags, o->batch, o->iterations, o->warmup,
                                        o->cuda_graph, o->profile, o->json_path});
      return;
    }
#ifdef KILN_HAVE_CUDA
    KILN_CHECK(o->iterations > 0 && o->warmup >= 0, "--iterations must be positive");
    exit_code = RunBench(*o);
#else
    (void)exit_code;
    Fail("this kiln was built without CUDA; `kiln bench` needs a GPU");
#endif
  });
}

}  // namespace kiln::cli
