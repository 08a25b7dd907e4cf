// `kiln run`: import, optimize and run a model once (or a few times, for a
// wall-time median) on given or random inputs; print and save the outputs.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <random>

#include "cli/cli_util.h"
#include "cpu/executor.h"
#include "ir/npy.h"
#include "onnx/importer.h"
#include "passes/passes.h"

namespace kiln::cli {
namespace {

struct RunOptions {
  std::string model_path;
  std::vector<std::string> inputs;  // name=file.npy
  std::vector<std::string> shapes;  // name=2x3x224x224
  std::string backend = "cpu";  // "gpu" is implied by a .kiln engine file.
  EngineFlags engine_flags;
  std::string output_dir = "kiln_outputs";
  uint32_t seed = 0;
  int iterations = 1;
};

bool ContainsMask(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name.find("mask") != std::string::npos;
}

// Random data for an input nobody supplied: floats uniform in [-1, 1),
// integers in [0, 100) (valid token ids / indices for most models), random
// bools; anything named like a mask is all ones.
Tensor RandomInput(const ir::Value& input, std::mt19937& rng) {
  const DType dtype = input.type.dtype;
  Tensor t(dtype, ir::KnownDims(*input.type.shape));
  const bool ones = ContainsMask(input.name);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::uniform_int_distribution<int> small_int(0, 99);
  std::uniform_int_distribution<int> coin(0, 1);
  const int64_t n = t.numel();
  switch (dtype) {
    case DType::kFloat32:
      for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = ones ? 1.f : uniform(rng);
      break;
    case DType::kFloat64:
      for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = ones ? 1.0 : uniform(rng);
      break;
    case DType::kFloat16:
      for (int64_t i = 0; i < n; ++i)
        t.data<uint16_t>()[i] = FloatToHalf(ones ? 1.f : uniform(rng));
      break;
    case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i)
        t.data<uint16_t>()[i] = FloatToBFloat16(ones ? 1.f : uniform(rng));
      break;
    case DType::kBool:
      for (int64_t i = 0; i < n; ++i)
        t.data<uint8_t>()[i] = ones ? 1 : static_cast<uint8_t>(coin(rng));
      break;
    default: {
      KILN_CHECK(IsInteger(dtype), "cannot make random data for input '", input.name, "' of type ",
                 DTypeName(dtype), "; pass it with --input ", input.name, "=file.npy");
      // Fill as int64, then convert to the input's integer type.
      Tensor wide(DType::kInt64, t.dims());
      for (int64_t i = 0; i < n; ++i) wide.data<int64_t>()[i] = ones ? 1 : small_int(rng);
      t = wide.CastTo(dtype);
    }
  }
  return t;
}

// Loads the --input files and checks them against the declared input types,
// naming the input, the file and both types on a mismatch.
std::map<std::string, Tensor> LoadInputFiles(ir::Graph& graph, const RunOptions& options,
                                             DimBindings& bindings) {
  std::map<std::string, Tensor> given;
  for (const std::string& spec : options.inputs) {
    auto [name, path] = ParseNamedFile(spec);
    if (name.empty()) {
      KILN_CHECK(graph.inputs().size() == 1, "--input '", spec, "' has no name; the model has ",
                 graph.inputs().size(), " inputs, so use --input NAME=FILE");
      name = graph.inputs()[0]->name;
    }
    ir::Value* input = FindGraphInput(graph, name);
    KILN_CHECK(!given.count(name), "input '", name, "' is given twice");
    Tensor t = npy::ReadNpyFile(path);
    const ir::TensorType& declared = input->type;
    KILN_CHECK(t.dtype() == declared.dtype, "input '", name, "' expects ", declared.ToString(),
               ", but '", path, "' holds ", t.TypeString());
    try {
      SetInputDims(*input, t.dims(), bindings);
    } catch (const Error& e) {
      Fail("input '", name, "' expects ", declared.ToString(), ", but '", path, "' holds ",
           t.TypeString(), " (", e.what(), ")");
    }
    given[name] = std::move(t);
  }
  return given;
}

// Min/max/mean over the finite values; NaN and infinities are counted apart
// so one bad element does not hide the rest.
struct Stats {
  double min = 0, max = 0, mean = 0;
  int64_t nan = 0, inf = 0;
};

Stats ComputeStats(const Tensor& t) {
  Stats s;
  double sum = 0;
  int64_t finite = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    double v = t.GetAsDouble(i);
    if (std::isnan(v)) {
      ++s.nan;
      continue;
    }
    if (std::isinf(v)) {
      ++s.inf;
      continue;
    }
    s.min = finite ? std::min(s.min, v) : v;
    s.max = finite ? std::max(s.max, v) : v;
    sum += v;
    ++finite;
  }
  if (finite) s.mean = sum / static_cast<double>(finite);
  return s;
}

void PrintOutput(const std::string& name, const Tensor& t, const std::string& saved_path) {
  std::ostream& out = std::cout;
  out << "output '" << name << "': " << DTypeName(t.dtype()) << " " << DimsToString(t.dims());
  if (t.dtype() == DType::kString) {
    out << " (string data not shown)\n";
    return;
  }
  const Stats s = ComputeStats(t);
  out << std::setprecision(6) << "  min " << s.min << "  max " << s.max << "  mean " << s.mean;
  if (s.nan) out << "  (" << s.nan << " NaN)";
  if (s.inf) out << "  (" << s.inf << " infinite)";
  out << "\n";
  constexpr int64_t kShown = 8;
  out << "  values: [";
  for (int64_t i = 0; i < std::min(kShown, t.numel()); ++i)
    out << (i ? ", " : "") << t.GetAsDouble(i);
  out << (t.numel() > kShown ? ", ...]\n" : "]\n");
  if (IsFloatingPoint(t.dtype()) && t.rank() == 2 && t.dim(1) > 0) {
    // Top-1 per row: a classifier's predicted class.
    constexpr int64_t kRowsShown = 16;
    out << "  argmax per row: [";
    for (int64_t r = 0; r < std::min(kRowsShown, t.dim(0)); ++r) {
      int64_t best = 0;
      for (int64_t c = 1; c < t.dim(1); ++c)
        if (t.GetAsDouble(r * t.dim(1) + c) > t.GetAsDouble(r * t.dim(1) + best)) best = c;
      out << (r ? ", " : "") << best;
    }
    out << (t.dim(0) > kRowsShown ? ", ...]\n" : "]\n");
  }
  if (!saved_path.empty()) out << "  saved to " << saved_path << "\n";
}

void WriteAndPrintOutputs(const std::vector<std::string>& names, const std::vector<Tensor>& outputs,
                          const RunOptions& options) {
  std::filesystem::create_directories(options.output_dir);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = names[i];
    Tensor t = outputs[i];
    std::string path;
    // NumPy has no bfloat16: save those as float32.
    Tensor to_save = t.dtype() == DType::kBFloat16 ? t.CastTo(DType::kFloat32) : t;
    if (to_save.dtype() != DType::kString) {
      path = (std::filesystem::path(options.output_dir) / (SafeFileName(name) + ".npy")).string();
      npy::WriteNpyFile(to_save, path);
    }
    PrintOutput(name, t, path);
  }
}

#ifdef KILN_HAVE_CUDA
// The GPU path: a .kiln engine, or an ONNX model built into one on the fly.
int RunOnGpu(const RunOptions& options) {
  EngineFlags flags = options.engine_flags;
  const bool engine_file = IsEngineFile(options.model_path);
  // An engine file's shapes are chosen on its context below (SetInputShapes).
  if (!engine_file) flags.shapes.insert(flags.shapes.end(), options.shapes.begin(), options.shapes.end());
  std::map<std::string, Tensor> feeds;
  for (const std::string& spec : options.inputs) {
    auto [name, path] = ParseNamedFile(spec);
    Tensor t = npy::ReadNpyFile(path);
    feeds[name] = t;
  }
  // Given inputs fix their shapes when building from ONNX.
  if (!IsEngineFile(options.model_path)) {
    for (const auto& [name, t] : feeds) {
      if (name.empty()) continue;
      std::string spec = name + "=";
      for (int i = 0; i < t.rank(); ++i) spec += (i ? "x" : "") + std::to_string(t.dim(i));
      flags.shapes.push_back(spec);
    }
  }
  std::unique_ptr<Engine> engine = LoadOrBuildEngine(options.model_path, flags);
  if (feeds.count("")) {
    KILN_CHECK(engine->inputs().size() == 1, "--input without a name needs a one-input model");
    feeds[engine->inputs()[0].name] = feeds[""];
    feeds.erase("");
  }
  std::unique_ptr<ExecutionContext> context = engine->CreateContext();
  if (engine_file) {
    // --shapes and the given inputs pick the shape: any inside an
    // optimization profile, or exactly the built one for a static engine.
    InputShapes shapes;
    for (const std::string& spec : options.shapes) {
      auto [name, dims] = ParseShapeSpec(spec);
      shapes[name] = dims;
    }
    for (const auto& [name, t] : feeds) shapes[name] = t.dims();
    if (!shapes.empty()) context->SetInputShapes(shapes);
  }
  std::mt19937 rng(options.seed);
  for (const TensorDesc& d : context->CurrentInputs()) {
    if (feeds.count(d.name)) continue;
    ir::Value v;
    v.name = d.name;
    v.type = {d.dtype, ir::ShapeFromDims(d.dims)};
    feeds[d.name] = RandomInput(v, rng);
  }
  std::vector<Tensor> outputs;
  std::vector<double> times_ms;
  for (int i = 0; i < options.iterations; ++i) {
    auto start = std::chrono::steady_clock::now();
    outputs = context->Run(feeds);
    auto end = std::chrono::steady_clock::now();
    times_ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  }
  std::vector<std::string> names;
  for (const TensorDesc& d : engine->outputs()) names.push_back(d.name);
  WriteAndPrintOutputs(names, outputs, options);
  std::sort(times_ms.begin(), times_ms.end());
  std::cout << std::fixed << std::setprecision(3) << "time: " << times_ms[times_ms.size() / 2]
            << " ms per run (median of " << times_ms.size() << ", gpu backend, "
            << PrecisionName(engine->info().precision)
            << ", including host<->device copies and allocation)\n";
  return 0;
}
#endif

int RunModel(const RunOptions& options) {
  KILN_CHECK(options.iterations >= 1, "--iterations must be at least 1");
  if (options.backend == "gpu" || IsEngineFile(options.model_path)) {
#ifdef KILN_HAVE_CUDA
    return RunOnGpu(options);
#else
    Fail("this kiln was built without CUDA; use --backend cpu");
#endif
  }
  KILN_CHECK(!options.engine_flags.fp16 && !options.engine_flags.bf16 && !options.engine_flags.tf32,
             "--fp16/--bf16/--tf32 apply to --backend gpu");

  std::unique_ptr<ir::Graph> graph = onnx_import::ImportModelFile(options.model_path);
  // Concrete input shapes before optimizing, so shape computations fold.
  // Inputs sharing a named dim ("batch") get the size given for any of them.
  DimBindings bindings;
  for (const std::string& spec : options.shapes) {
    auto [name, dims] = ParseShapeSpec(spec);
    SetInputDims(*FindGraphInput(*graph, name), dims, bindings);
  }
  std::map<std::string, Tensor> feeds = LoadInputFiles(*graph, options, bindings);
  SetDynamicInputDims(*graph, bindings);
  passes::Optimize(*graph);

  std::mt19937 rng(options.seed);
  for (const ir::Value* input : graph->inputs())
    if (!feeds.count(input->name)) feeds[input->name] = RandomInput(*input, rng);

  cpu::Executor executor(*graph);
  std::vector<Tensor> outputs;
  std::vector<double> times_ms;
  for (int i = 0; i < options.iterations; ++i) {
    auto start = std::chrono::steady_clock::now();
    outputs = executor.Run(feeds);
    auto end = std::chrono::steady_clock::now();
    times_ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  }

  std::vector<std::string> names;
  for (const ir::Value* v : graph->outputs()) names.push_back(v->name);
  WriteAndPrintOutputs(names, outputs, options);
  std::sort(times_ms.begin(), times_ms.end());
  std::cout << std::fixed << std::setprecision(3) << "time: " << times_ms[times_ms.size() / 2]
            << " ms per run (median of " << times_ms.size() << ", cpu backend)\n";
  return 0;
}

}  // namespace

void AddRunCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Run a model on given or random inputs");
  cmd->add_option("model", options->model_path, "ONNX model or kiln engine (.kiln) file")->required();
  cmd->add_option("--input,-i", options->inputs,
                  "An input as NAME=FILE.npy (just FILE.npy for a one-input model)");
  cmd->add_option("--shapes", options->shapes,
                  "Shapes of random inputs, e.g. input=2x3x224x224 (dynamic dims default to 1; "
                  "for an engine built with --profile, any shape inside a profile)");
  cmd->add_option("--backend", options->backend, "Backend: cpu or gpu")
      ->check(CLI::IsMember({"cpu", "gpu"}));
  cmd->add_option("--output-dir,-o", options->output_dir, "Where to write <output>.npy files")
      ->capture_default_str();
  cmd->add_flag("--fp16", options->engine_flags.fp16, "GPU: FP16 engine");
  cmd->add_flag("--bf16", options->engine_flags.bf16, "GPU: BF16 engine");
  cmd->add_flag("--tf32", options->engine_flags.tf32, "GPU: TF32 tensor-core math");
  cmd->add_option("--seed", options->seed, "Seed for random inputs")->capture_default_str();
  cmd->add_option("--iterations,-n", options->iterations, "Runs to time (median is printed)")
      ->capture_default_str();
  cmd->callback([options, &exit_code] { exit_code = RunModel(*options); });
}

}  // namespace kiln::cli
