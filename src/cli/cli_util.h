// Small helpers shared by the kiln subcommands.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "ir/graph.h"

namespace kiln::cli {

// Each subcommand lives in its own file and registers itself on the app. Its
// callback stores the process exit code in `exit_code` (errors are thrown as
// kiln::Error and turned into exit code 1 by main).
void AddInspectCommand(CLI::App& app, int& exit_code);
void AddRunCommand(CLI::App& app, int& exit_code);
void AddBuildCommand(CLI::App& app, int& exit_code);
void AddBenchCommand(CLI::App& app, int& exit_code);
void AddServeCommand(CLI::App& app, int& exit_code);

// Engine build flags shared by build, bench and run (build.cc).
struct EngineFlags {
  bool fp16 = false, bf16 = false, tf32 = false;
  std::vector<std::string> shapes;  // name=1x3x224x224
  std::string timing_cache;
  std::string conv_layout = "auto";
  bool verbose = false;
};
void AddEngineFlags(CLI::App* cmd, EngineFlags& flags);

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

}  // namespace kiln::cli

#ifdef KILN_HAVE_CUDA
#include "kiln/engine.h"
namespace kiln::cli {
BuildConfig MakeBuildConfig(const EngineFlags& flags);
void PrintEngineSummary(const Engine& engine);
// Loads a .kiln file, or builds an engine from an ONNX file with `flags`.
std::unique_ptr<Engine> LoadOrBuildEngine(const std::string& path, const EngineFlags& flags);
}  // namespace kiln::cli
#endif
