// `kiln bench MODEL --contexts N --threads M`: one engine, N execution
// contexts sharing its weights (each with its own activation arena, library
// handles, stream and device-resident bindings), driven by M host threads
// (context c belongs to thread c % M). Reports aggregate throughput,
// per-thread latency percentiles and the memory each context costs, next to
// the same measurement with one context on one thread in the same run.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <latch>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "profile/sweep.h"

#ifdef KILN_HAVE_CUDA
#include "cuda/cuda_check.h"

namespace kiln::cli {
namespace {

// One context with everything it runs on.
struct ContextSlot {
  std::unique_ptr<ExecutionContext> context;
  std::unique_ptr<DeviceBindings> bindings;
  CudaStream stream;
  CudaEvent start, stop;
};

struct ThreadResult {
  std::vector<int> contexts;      // Indices into the slots it drove.
  std::vector<double> latency_ms;  // One per inference, all its contexts.
  std::exception_ptr error;
};

struct LoadResult {
  double seconds = 0;  // Wall time from the common start until every thread is done.
  int64_t inferences = 0;
  std::vector<ThreadResult> threads;
};

// Runs `iterations` inferences on each of `slots` from `num_threads` threads.
// Each thread warms its contexts up (capturing their graphs), waits for the
// common start, then loops: enqueue one inference on each of its contexts
// (each on its own stream, so they overlap on the GPU), then wait for them;
// an inference's latency is the time between events recorded on its stream
// around it.
LoadResult RunLoad(const std::vector<ContextSlot*>& slots, int num_threads, const BenchBasics& b) {
  LoadResult result;
  result.threads.resize(static_cast<size_t>(num_threads));
  for (size_t c = 0; c < slots.size(); ++c)
    result.threads[c % static_cast<size_t>(num_threads)].contexts.push_back(static_cast<int>(c));
  std::latch ready(num_threads), go(1);
  std::atomic<bool> abort = false;

  auto body = [&](ThreadResult& mine) {
    auto enqueue = [&](ContextSlot& s) {
      if (b.cuda_graph) {
        s.context->EnqueueGraph(s.bindings->inputs(), s.bindings->outputs(), s.stream.stream);
      } else {
        s.context->Enqueue(s.bindings->inputs(), s.bindings->outputs(), s.stream.stream);
      }
    };
    try {
      for (int w = 0; w < std::max(b.warmup, 1); ++w)
        for (int c : mine.contexts) enqueue(*slots[static_cast<size_t>(c)]);
      for (int c : mine.contexts)
        KILN_CUDA_CHECK(cudaStreamSynchronize(slots[static_cast<size_t>(c)]->stream.stream));
    } catch (...) {
      mine.error = std::current_exception();
    }
    ready.count_down();
    go.wait();
    if (mine.error || abort) return;
    try {
      mine.latency_ms.reserve(static_cast<size_t>(b.iterations) * mine.contexts.size());
      for (int it = 0; it < b.iterations; ++it) {
        for (int c : mine.contexts) {
          ContextSlot& s = *slots[static_cast<size_t>(c)];
          KILN_CUDA_CHECK(cudaEventRecord(s.start.event, s.stream.stream));
          enqueue(s);
          KILN_CUDA_CHECK(cudaEventRecord(s.stop.event, s.stream.stream));
        }
        for (int c : mine.contexts) {
          ContextSlot& s = *slots[static_cast<size_t>(c)];
          KILN_CUDA_CHECK(cudaEventSynchronize(s.stop.event));
          float ms = 0;
          KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, s.start.event, s.stop.event));
          mine.latency_ms.push_back(ms);
        }
      }
    } catch (...) {
      mine.error = std::current_exception();
    }
  };

  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(num_threads));
  try {
    for (int t = 0; t < num_threads; ++t)
      threads.emplace_back(body, std::ref(result.threads[static_cast<size_t>(t)]));
  } catch (...) {  // A thread could not start: release the others and give up.
    abort = true;
    go.count_down();
    for (std::thread& t : threads) t.join();
    throw;
  }
  ready.wait();
  const auto t0 = std::chrono::steady_clock::now();
  go.count_down();
  for (std::thread& t : threads) t.join();
  const auto t1 = std::chrono::steady_clock::now();
  for (const ThreadResult& r : result.threads)
    if (r.error) std::rethrow_exception(r.error);
  result.seconds = std::chrono::duration<double>(t1 - t0).count();
  result.inferences = static_cast<int64_t>(b.iterations) * static_cast<int64_t>(slots.size());
  KILN_CHECK(result.seconds > 0, "no time elapsed over ", result.inferences, " inferences");
  return result;
}

std::string ContextList(const std::vector<int>& contexts) {
  std::string s;
  for (int c : contexts) s += (s.empty() ? "" : ", ") + std::to_string(c);
  return s;
}

}  // namespace

int RunBenchContexts(const BenchBasics& b, int num_contexts, int num_threads) {
  EngineFlags flags = b.flags;
  std::unique_ptr<Engine> engine;
  if (b.batch > 0 && !IsEngineFile(b.model)) {
    // --batch goes to every input whose dim 0 is dynamic (as in --sweep);
    // other dims come from --shapes. A model with a fixed batch is built as is
    // and checked below.
    LoadOptions load;
    load.optimize = false;
    const std::vector<TensorDesc> inputs = Model::Load(b.model, load)->inputs();
    const bool dynamic_batch = std::any_of(inputs.begin(), inputs.end(), [](const TensorDesc& d) {
      return !d.dims.empty() && d.dims[0] < 0;
    });
    BuildConfig config = MakeBuildConfig(flags);
    if (dynamic_batch) config.shapes = profile::ShapesForBatch(inputs, config.shapes, b.batch);
    engine = Engine::Build(b.model, config);
  } else {
    engine = LoadOrBuildEngine(b.model, flags);
  }
  const int64_t batch =
      engine->inputs().empty() || engine->inputs()[0].dims.empty() ? 1 : engine->inputs()[0].dims[0];
  KILN_CHECK(b.batch == 0 || batch == b.batch, "the engine was built for batch ", batch, ", not ",
             b.batch, "; rebuild with --shapes");
  PrintEngineSummary(*engine);

  std::vector<std::unique_ptr<ContextSlot>> owned;
  std::vector<ContextSlot*> slots;
  for (int c = 0; c < num_contexts; ++c) {
    auto slot = std::make_unique<ContextSlot>();
    slot->context = engine->CreateContext();
    slot->bindings = std::make_unique<DeviceBindings>(*engine, static_cast<uint32_t>(c));
    slots.push_back(slot.get());
    owned.push_back(std::move(slot));
  }

  // The reference: context 0 alone on one thread, then all of them.
  const LoadResult single = RunLoad({slots[0]}, 1, b);
  const LoadResult load = RunLoad(slots, num_threads, b);
  int64_t non_finite = 0;
  for (ContextSlot* s : slots) non_finite += s->bindings->CountNonFiniteOutputs();

  auto samples_per_s = [&](const LoadResult& r) {
    return static_cast<double>(r.inferences) * static_cast<double>(batch) / r.seconds;
  };
  auto inferences_per_s = [](const LoadResult& r) { return static_cast<double>(r.inferences) / r.seconds; };
  const double speedup = samples_per_s(load) / samples_per_s(single);
  const EngineInfo& info = engine->info();
  size_t context_total = 0;
  for (ContextSlot* s : slots) context_total += s->context->DeviceMemoryBytes();

  std::cout << "contexts: " << num_contexts << " execution context" << (num_contexts == 1 ? "" : "s")
            << " sharing one engine, " << num_threads << " host thread" << (num_threads == 1 ? "" : "s")
            << " (context c on thread c mod " << num_threads << "), batch " << batch << ", "
            << (b.cuda_graph ? "CUDA Graph replay" : "stream enqueue") << ", " << b.iterations
            << " inferences per context after " << std::max(b.warmup, 1)
            << " warm-ups, inputs resident on the device\n"
            << "  engine weights: " << HumanBytes(static_cast<double>(info.weight_bytes))
            << " (one copy, shared)\n"
            << "  context device memory (activation arena + workspace):";
  for (size_t c = 0; c < slots.size(); ++c)
    std::cout << (c ? "," : "") << " #" << c << " "
              << HumanBytes(static_cast<double>(slots[c]->context->DeviceMemoryBytes()));
  std::cout << " (total " << HumanBytes(static_cast<double>(context_total)) << ", weights + contexts "
            << HumanBytes(static_cast<double>(info.weight_bytes + context_total)) << ")\n";

  const std::string many = StrCat(num_contexts, " contexts, ", num_threads, " thread", num_threads == 1 ? "" : "s");
  std::cout << "  " << std::left << std::setw(26) << "configuration" << std::right << std::setw(14)
            << "samples/s" << std::setw(15) << "inferences/s" << std::setw(14) << "vs 1 context" << "\n"
            << std::fixed << std::setprecision(1) << "  " << std::left << std::setw(26)
            << "1 context, 1 thread" << std::right << std::setw(14) << samples_per_s(single)
            << std::setw(15) << inferences_per_s(single) << std::setw(14) << "1.00x" << "\n"
            << "  " << std::left << std::setw(26) << many << std::right << std::setw(14)
            << samples_per_s(load) << std::setw(15) << inferences_per_s(load) << std::setw(13)
            << std::setprecision(2) << speedup << "x\n";
  std::cout << "  latency per inference (CUDA events on its context's stream), ms:\n";
  const Percentiles single_latency = Summarize(single.threads[0].latency_ms);
  std::cout << std::setprecision(4) << "    1 context alone:          p50 " << single_latency.median
            << "  p99 " << single_latency.p99 << "\n";
  std::vector<Percentiles> per_thread;
  for (size_t t = 0; t < load.threads.size(); ++t) {
    per_thread.push_back(Summarize(load.threads[t].latency_ms));
    std::string who = StrCat("thread ", t, " (context", load.threads[t].contexts.size() == 1 ? " " : "s ",
                             ContextList(load.threads[t].contexts), "):");
    std::cout << "    " << std::left << std::setw(26) << who << std::right << "p50 " << per_thread.back().median
              << "  p99 " << per_thread.back().p99 << "\n";
  }
  if (non_finite) std::cout << "  WARNING: " << non_finite << " non-finite output values\n";

  if (!b.json_path.empty()) {
    nlohmann::json context_bytes = nlohmann::json::array();
    for (ContextSlot* s : slots) context_bytes.push_back(s->context->DeviceMemoryBytes());
    nlohmann::json threads = nlohmann::json::array();
    for (size_t t = 0; t < load.threads.size(); ++t)
      threads.push_back({{"thread", t}, {"contexts", load.threads[t].contexts}, {"latency_ms", ToJson(per_thread[t])}});
    nlohmann::json j = {
        {"model", b.model},
        {"precision", PrecisionName(info.precision)},
        {"gpu", info.gpu_name},
        {"batch", batch},
        {"contexts", num_contexts},
        {"threads", num_threads},
        {"cuda_graph", b.cuda_graph},
        {"iterations_per_context", b.iterations},
        {"weight_bytes", info.weight_bytes},
        {"context_bytes", context_bytes},
        {"single_context",
         {{"samples_per_s", samples_per_s(single)},
          {"inferences_per_s", inferences_per_s(single)},
          {"latency_ms", ToJson(single_latency)}}},
        {"concurrent",
         {{"samples_per_s", samples_per_s(load)},
          {"inferences_per_s", inferences_per_s(load)},
          {"speedup_vs_single_context", speedup},
          {"threads", threads}}},
        {"non_finite_outputs", non_finite}};
    std::ofstream out(b.json_path);
    KILN_CHECK(out, "cannot write ", b.json_path);
    out << j.dump(2) << "\n";
  }
  return non_finite ? 1 : 0;
}

}  // namespace kiln::cli
#endif  // KILN_HAVE_CUDA
