// Small helpers shared by the kiln subcommands.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json_fwd.hpp>

#include "ir/graph.h"
#include "kiln/image.h"
#include "kiln/kiln.h"

namespace kiln::cli {

// Each subcommand lives in its own file and registers itself on the app. Its
// callback stores the process exit code in `exit_code` (errors are thrown as
// kiln::Error and turned into exit code 1 by main).
void AddInspectCommand(CLI::App& app, int& exit_code);
void AddRunCommand(CLI::App& app, int& exit_code);
void AddBuildCommand(CLI::App& app, int& exit_code);
void AddBenchCommand(CLI::App& app, int& exit_code);
void AddServeCommand(CLI::App& app, int& exit_code);
void AddPerfCommand(CLI::App& app, int& exit_code);

// Engine build flags shared by build, bench and run (build.cc).
struct EngineFlags {
  bool fp16 = false, bf16 = false, tf32 = false;
  std::vector<std::string> shapes;  // name=1x3x224x224
  std::string timing_cache;
  std::string conv_layout = "auto";
  bool verbose = false;
  std::string image_input;  // NAME[:mean=a,b,c][:std=x,y,z] (ParseImageInputSpec)
};
void AddEngineFlags(CLI::App* cmd, EngineFlags& flags);
// "--image-input" spec -> BuildConfig::image_input (include/kiln/image.h);
// empty spec: none. mean/std default to ImageNet's.
ImageInput ParseImageInputSpec(const std::string& spec);
// `dims` [N, C, H, W] of a model input as the binding an image input makes
// of it: [N, H, W, C] (other ranks unchanged).
std::vector<int64_t> ImageBindingDims(const std::vector<int64_t>& nchw);

// Model-level fields that the IR does not keep.
struct ModelMetadata {
  int64_t ir_version = 0;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  int64_t model_version = 0;
  std::vector<std::pair<std::string, int64_t>> opsets;  // (domain, version)
};
// Reads the top-level ModelProto fields without parsing the graph.
ModelMetadata ReadModelMetadata(const std::string& path);

// "name=1x3x224x224" (or "name=1,3,224,224") -> ("name", {1,3,224,224}).
std::pair<std::string, std::vector<int64_t>> ParseShapeSpec(const std::string& spec);
// "name=path" -> ("name", "path"); a bare "path" gives ("", "path").
std::pair<std::string, std::string> ParseNamedFile(const std::string& spec);

// The graph input called `name`; throws listing the inputs when there is none.
ir::Value* FindGraphInput(ir::Graph& graph, const std::string& name);
// Values given to named dynamic dims ("batch" -> 8), so that inputs sharing
// a symbol get the same size.
using DimBindings = std::map<std::string, int64_t>;
// Gives a graph input concrete dims; throws when they contradict its declared
// rank or known dims, or a size `bindings` already holds for one of its
// symbols. Records the sizes of its named dims in `bindings`.
void SetInputDims(ir::Value& input, const std::vector<int64_t>& dims, DimBindings& bindings);
// Makes every graph input concrete: named dims take their size from
// `bindings`, other dynamic dims become 1. Throws for an input of unknown
// rank.
void SetDynamicInputDims(ir::Graph& graph, const DimBindings& bindings);

// "25.56 M", "4.09 G".
std::string HumanCount(double count);
// "97.5 MiB".
std::string HumanBytes(double bytes);
// A file name made from a tensor name: characters other than [A-Za-z0-9._-]
// become '_'.
std::string SafeFileName(const std::string& name);

// True when `path` names a kiln engine file (by its .kiln extension).
bool IsEngineFile(const std::string& path);

// ---- Measurement helpers shared by the bench modes (bench.cc, bench_sweep.cc,
// bench_contexts.cc).

// Summary of a sample of times (ms): nearest-rank percentiles.
struct Percentiles {
  double min = 0, mean = 0, median = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
};
Percentiles Summarize(std::vector<double> samples);
nlohmann::json ToJson(const Percentiles& p);
// "  what              min .. mean .. median .. p90 .. p95 .. p99 .. max .. ms".
void PrintPercentiles(const char* what, const Percentiles& p);

// Fills `host` (d's dtype and dims, contiguous) with non-zero inputs: floats
// uniform in [-1, 1), integers in [0, 100), bools random (all ones for
// mask-like names).
void FillRandom(const TensorDesc& d, void* host, std::mt19937& rng);

// ---- `kiln bench` modes beyond the one-engine report, hooked into bench.cc:
// --sweep (bench_sweep.cc) and --contexts (bench_contexts.cc).
struct BenchModeFlags {
  std::string sweep;  // --sweep 1,2,4,...: one engine per batch size.
  bool sweep_given = false;
  std::string plot;   // --plot FILE.svg (with --sweep).
  int contexts = 0;   // --contexts N: N contexts sharing one engine.
  int threads = 1;    // --threads M (with --contexts).
  bool contexts_given = false, threads_given = false;
  bool active() const { return sweep_given || !plot.empty() || contexts_given || threads_given; }
};
void AddBenchModeFlags(CLI::App* cmd, BenchModeFlags& modes);
// The plain `kiln bench` settings a mode reads.
struct BenchBasics {
  std::string model;
  EngineFlags flags;
  int64_t batch = 0;
  int iterations = 0;
  int warmup = 0;
  bool cuda_graph = false;
  bool profile = false;
  std::string json_path;
};
// Checks the flag combination on the CPU (also without CUDA or a GPU), then
// runs the mode; returns the exit code.
int RunBenchMode(const BenchModeFlags& modes, const BenchBasics& basics);

}  // namespace kiln::cli

#ifdef KILN_HAVE_CUDA
#include "kiln/engine.h"
namespace kiln::cli {
BuildConfig MakeBuildConfig(const EngineFlags& flags);
void PrintEngineSummary(const Engine& engine);
// Loads a .kiln file, or builds an engine from an ONNX file with `flags`.
std::unique_ptr<Engine> LoadOrBuildEngine(const std::string& path, const EngineFlags& flags);
// Device-resident bindings for one context of `engine`: inputs filled once
// with FillRandom(seed), outputs allocated. Owns the buffers.
class DeviceBindings {
 public:
  DeviceBindings(const Engine& engine, uint32_t seed);
  ~DeviceBindings();
  DeviceBindings(const DeviceBindings&) = delete;
  DeviceBindings& operator=(const DeviceBindings&) = delete;
  const std::vector<const void*>& inputs() const { return inputs_; }
  const std::vector<void*>& outputs() const { return outputs_; }
  // Copies the outputs to the host (synchronous) and counts the non-finite
  // values of floating-point outputs.
  int64_t CountNonFiniteOutputs() const;

 private:
  const Engine& engine_;
  std::vector<void*> buffers_;  // cudaMalloc'd, freed by the destructor.
  std::vector<const void*> inputs_;
  std::vector<void*> outputs_;
};
// A non-blocking stream and a timing event, destroyed with their owner.
struct CudaStream {
  cudaStream_t stream = nullptr;
  CudaStream();
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
};
struct CudaEvent {
  cudaEvent_t event = nullptr;
  CudaEvent();
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
};
// `kiln bench --contexts N --threads M` (bench_contexts.cc), flags checked.
int RunBenchContexts(const BenchBasics& basics, int contexts, int threads);
}  // namespace kiln::cli
#endif
