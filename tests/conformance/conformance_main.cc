// kiln_conformance: runs the ONNX backend test suite (node, pytorch-converted,
// pytorch-operator, simple) against the CPU backend, the way a user runs a model:
// kiln::Model::Load (import + optimize), then RunCpu on every test_data_set_*.
//
// A test is SKIPPED when it needs something kiln does not claim (an operator
// without a CPU kernel, an opset outside an operator's range, a non-tensor or
// string type); otherwise it PASSES or FAILS with a one-line reason. Each test
// runs in a forked child, so a crash, a runaway allocation or a hang in one
// operator fails that test instead of the run. See tests/conformance/README.md.
//
// The last line printed is the summary "N passed, M failed, K skipped" (plus a
// known-failure line when the expectations file lists failing tests); the exit
// status is 0 iff M == 0.

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ir/graph.h"
#include "kiln/kiln.h"
#ifdef KILN_HAVE_CUDA
#include "kiln/engine.h"
#endif
#include "onnx.pb.h"
#include "onnx/importer.h"
#include "ops/registry.h"

namespace fs = std::filesystem;

namespace kiln::conformance {
namespace {

constexpr double kRelativeTolerance = 1e-3;  // As the ONNX backend test runner.
constexpr double kAbsoluteTolerance = 1e-7;

enum class Status { kPassed, kFailed, kSkipped };

struct TestCase {
  std::string suite;
  std::string name;
  fs::path dir;
  std::string id() const { return suite + "/" + name; }
};

struct Outcome {
  Status status = Status::kFailed;
  std::string reason;  // One line: why it failed or was skipped.
  double seconds = 0;
};

struct Options {
  std::string data_dir = "/usr/share/libonnx-testdata/data";
  std::vector<std::string> suites = {"node", "pytorch-converted", "pytorch-operator", "simple"};
  std::vector<std::string> filters;
  std::vector<std::string> expectations;  // Known-failure files, merged.
  bool verbose = false;
  int jobs = 1;
  double timeout_s = 60;
  int64_t memory_limit_mb = 4096;
  bool no_fork = false;
  std::string backend = "cpu";  // "gpu": build a kiln engine (FP32, TF32 off) per data set.
};

std::string OneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

// ---------------------------------------------------------------------------
// What a test needs: operators and types, read from the ModelProto itself so
// the decision does not depend on the importer's behaviour.
// ---------------------------------------------------------------------------

bool IsSupportedDataType(int32_t onnx_type) {
  switch (static_cast<DType>(onnx_type)) {
    case DType::kFloat32: case DType::kUInt8: case DType::kInt8: case DType::kUInt16:
    case DType::kInt16: case DType::kInt32: case DType::kInt64: case DType::kBool:
    case DType::kFloat16: case DType::kFloat64: case DType::kUInt32: case DType::kUInt64:
    case DType::kBFloat16:
      return true;
    default:
      return false;
  }
}

std::string DataTypeName(int32_t onnx_type) {
  if (::onnx::TensorProto_DataType_IsValid(onnx_type)) {
    return ::onnx::TensorProto_DataType_Name(static_cast<::onnx::TensorProto_DataType>(onnx_type));
  }
  return "data type " + std::to_string(onnx_type);
}

// Returns "" when kiln supports the type, else why not.
std::string CheckType(const ::onnx::TypeProto& type, const std::string& what) {
  switch (type.value_case()) {
    case ::onnx::TypeProto::kTensorType: {
      int32_t elem = type.tensor_type().elem_type();
      if (elem != 0 && !IsSupportedDataType(elem)) {
        return what + " has unsupported dtype " + DataTypeName(elem);
      }
      return "";
    }
    case ::onnx::TypeProto::kSequenceType: return what + " is a sequence";
    case ::onnx::TypeProto::kMapType: return what + " is a map";
    case ::onnx::TypeProto::kOptionalType: return what + " is an optional";
    case ::onnx::TypeProto::kSparseTensorType: return what + " is a sparse tensor";
    default: return "";  // No type recorded: nothing to object to.
  }
}

// Returns "" when kiln claims every node of `graph` (and of any subgraph,
// which the importer would reject anyway), else the first reason it does not.
std::string CheckGraph(const ::onnx::GraphProto& graph, const std::map<std::string, int>& opsets) {
  const OpRegistry& registry = OpRegistry::Global();
  auto type_problem = [](const ::onnx::ValueInfoProto& v, const char* kind) {
    return CheckType(v.type(), std::string(kind) + " '" + v.name() + "'");
  };
  for (const auto& v : graph.input())
    if (auto why = type_problem(v, "input"); !why.empty()) return why;
  for (const auto& v : graph.output())
    if (auto why = type_problem(v, "output"); !why.empty()) return why;
  for (const auto& v : graph.value_info())
    if (auto why = type_problem(v, "value"); !why.empty()) return why;
  for (const auto& t : graph.initializer()) {
    if (!IsSupportedDataType(t.data_type())) {
      return "initializer '" + t.name() + "' has unsupported dtype " + DataTypeName(t.data_type());
    }
  }
  if (graph.sparse_initializer_size() > 0) return "the graph has sparse initializers";

  for (const auto& node : graph.node()) {
    const std::string& domain = node.domain();
    if (!domain.empty() && domain != "ai.onnx") {
      return "operator " + domain + "." + node.op_type() + " (domain not supported)";
    }
    const OpDef* def = registry.Find(node.op_type());
    if (def == nullptr || !def->infer || !def->cpu_kernel) {
      return "operator " + node.op_type() + " is not implemented";
    }
    auto it = opsets.find("");
    int opset = it == opsets.end() ? 1 : it->second;
    if (opset < def->min_opset || opset > def->max_opset) {
      return StrCat("operator ", node.op_type(), " at opset ", opset, " (kiln implements opsets ",
                    def->min_opset, " to ", def->max_opset, ")");
    }
    for (const auto& attr : node.attribute()) {
      if (attr.has_t() && !IsSupportedDataType(attr.t().data_type())) {
        return StrCat(node.op_type(), " attribute '", attr.name(), "' has unsupported dtype ",
                      DataTypeName(attr.t().data_type()));
      }
      // Cast 'to', EyeLike/RandomX 'dtype' and similar name an output dtype.
      if ((attr.name() == "to" || attr.name() == "dtype") &&
          attr.type() == ::onnx::AttributeProto::INT &&
          !IsSupportedDataType(static_cast<int32_t>(attr.i()))) {
        return StrCat(node.op_type(), " produces unsupported dtype ",
                      DataTypeName(static_cast<int32_t>(attr.i())));
      }
      if (attr.has_g()) {
        if (auto why = CheckGraph(attr.g(), opsets); !why.empty()) return why;
      }
      for (const auto& g : attr.graphs())
        if (auto why = CheckGraph(g, opsets); !why.empty()) return why;
    }
  }
  return "";
}

// What the test data must match, from the ModelProto.
struct ModelInfo {
  std::vector<std::string> input_names;  // Graph inputs the data feeds (initializers excluded).
  std::vector<int32_t> input_types;      // Their declared ONNX element types (0 = unknown).
  std::vector<int32_t> output_types;
};

// Reads the model and decides whether kiln claims it ("" when it does); fills `info`.
std::string CheckModel(const fs::path& model_path, ModelInfo* info) {
  std::ifstream file(model_path, std::ios::binary);
  if (!file) return "cannot open " + model_path.string();
  ::onnx::ModelProto model;
  if (!model.ParseFromIstream(&file)) return "cannot parse " + model_path.string();

  std::map<std::string, int> opsets;
  for (const auto& op : model.opset_import()) {
    std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
    opsets[domain] = static_cast<int>(op.version());
  }
  int opset = opsets.count("") ? opsets[""] : 1;
  if (opset < kMinSupportedOpset || opset > kMaxSupportedOpset) {
    return StrCat("model opset ", opset, " is outside kiln's range ", kMinSupportedOpset, " to ",
                  kMaxSupportedOpset);
  }
  if (model.graph().node_size() == 0 && model.graph().output_size() == 0) return "empty graph";
  if (auto why = CheckGraph(model.graph(), opsets); !why.empty()) return why;

  std::set<std::string> initializers;
  for (const auto& t : model.graph().initializer()) initializers.insert(t.name());
  for (const auto& v : model.graph().input()) {
    if (initializers.count(v.name())) continue;
    info->input_names.push_back(v.name());
    info->input_types.push_back(v.type().tensor_type().elem_type());
  }
  for (const auto& v : model.graph().output())
    info->output_types.push_back(v.type().tensor_type().elem_type());
  return "";
}

// ---------------------------------------------------------------------------
// Comparison, as the ONNX backend runner does it.
// ---------------------------------------------------------------------------

// Returns "" when equal within tolerance, else the first difference.
std::string Compare(const Tensor& actual, const Tensor& expected) {
  if (actual.dtype() != expected.dtype()) {
    return StrCat("dtype ", DTypeName(actual.dtype()), ", expected ",
                  DTypeName(expected.dtype()));
  }
  if (actual.dims() != expected.dims()) {
    return StrCat("shape ", DimsToString(actual.dims()), ", expected ",
                  DimsToString(expected.dims()));
  }
  const int64_t n = expected.numel();
  if (IsFloatingPoint(expected.dtype())) {
    int64_t mismatches = 0, first = -1;
    for (int64_t i = 0; i < n; ++i) {
      double a = actual.GetAsDouble(i), e = expected.GetAsDouble(i);
      if (a == e || (std::isnan(a) && std::isnan(e))) continue;  // Also equal infinities.
      if (std::fabs(a - e) <= kAbsoluteTolerance + kRelativeTolerance * std::fabs(e)) continue;
      if (first < 0) first = i;
      ++mismatches;
    }
    if (first < 0) return "";
    return StrCat("element ", first, ": got ", actual.GetAsDouble(first), ", expected ",
                  expected.GetAsDouble(first), " (", mismatches, " of ", n,
                  " elements differ beyond rtol=1e-3, atol=1e-7)");
  }
  // Integers and bool compare exactly; int64 through GetAsInt64 to keep all bits.
  for (int64_t i = 0; i < n; ++i) {
    if (actual.GetAsInt64(i) != expected.GetAsInt64(i)) {
      return StrCat("element ", i, ": got ", actual.GetAsInt64(i), ", expected ",
                    expected.GetAsInt64(i));
    }
  }
  return "";
}

std::vector<fs::path> NumberedFiles(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> files;
  for (int i = 0;; ++i) {
    fs::path p = dir / (prefix + std::to_string(i) + ".pb");
    if (!fs::exists(p)) break;
    files.push_back(p);
  }
  return files;
}

// ONNX 1.12's test data stores bfloat16 tensors as uint16 bit patterns (numpy
// has no bfloat16). Where the model declares bfloat16, reinterpret them.
Tensor MatchDeclaredType(const Tensor& t, int32_t declared) {
  if (static_cast<DType>(declared) != DType::kBFloat16 || t.dtype() != DType::kUInt16) return t;
  Tensor bf16(DType::kBFloat16, t.dims());
  std::memcpy(bf16.raw_data(), t.raw_data(), t.nbytes());
  return bf16;
}

// ---------------------------------------------------------------------------
// One test, in-process. Everything it throws becomes a FAILED outcome.
// ---------------------------------------------------------------------------

// The backend under test; set once from --backend before any test runs.
std::string g_backend = "cpu";

std::vector<Tensor> RunBackend(const std::string& model_path, const Model& model,
                               const std::map<std::string, Tensor>& feeds) {
  if (g_backend == "cpu") return model.RunCpu(feeds);
#ifdef KILN_HAVE_CUDA
  // A GPU engine specialized to this data set's shapes, FP32 with TF32 off,
  // so the suite's tolerances apply unchanged.
  BuildConfig config;
  config.precision = Precision::kFP32;
  config.tuning_iterations = 1;
  for (const auto& [name, t] : feeds) config.shapes[name] = t.dims();
  std::unique_ptr<Engine> engine;
  std::map<std::string, Tensor> run_feeds = feeds;
  try {
    engine = Engine::Build(model_path, config);
  } catch (const Error& e) {
    // The suite feeds shape operands (Reshape's shape, Slice's starts, axes,
    // scales, ...) as inputs; engines have static shapes, so such inputs are
    // frozen at build time, as a user would with BuildConfig::frozen_inputs:
    // inputs that no node reads as its first (data) operand and that are
    // integer/bool or have at most 8 elements.
    std::string what = e.what();
    if (what.find("run-time data") == std::string::npos &&
        what.find("must be a constant") == std::string::npos)
      throw;
    std::set<std::string> data_inputs;
    for (const auto& node : model.graph().nodes())
      if (!node->inputs.empty() && node->inputs[0]) data_inputs.insert(node->inputs[0]->name);
    for (const auto& [name, t] : feeds) {
      if (data_inputs.count(name)) continue;
      if (t.numel() <= 8 || !IsFloatingPoint(t.dtype())) {
        config.frozen_inputs[name] = t;
        config.shapes.erase(name);
        run_feeds.erase(name);
      }
    }
    // With every input frozen the build would fold the whole test on the
    // CPU, so it would test nothing on the GPU: report the original error.
    if (run_feeds.empty()) throw;
    engine = Engine::Build(model_path, config);
  }
  return engine->CreateContext()->Run(run_feeds);
#else
  Fail("this build has no CUDA backend");
#endif
}

Outcome RunTestUnguarded(const TestCase& test) {
  fs::path model_path = test.dir / "model.onnx";
  if (!fs::exists(model_path)) return {Status::kSkipped, "no model.onnx (data not downloaded)"};

  ModelInfo info;
  if (std::string why = CheckModel(model_path, &info); !why.empty()) {
    return {Status::kSkipped, why};
  }
  std::vector<fs::path> data_sets;
  for (const auto& entry : fs::directory_iterator(test.dir)) {
    if (entry.is_directory() && entry.path().filename().string().rfind("test_data_set_", 0) == 0) {
      data_sets.push_back(entry.path());
    }
  }
  std::sort(data_sets.begin(), data_sets.end());
  if (data_sets.empty()) return {Status::kSkipped, "no test_data_set_* folder"};

  std::unique_ptr<Model> model;
  try {
    model = Model::Load(model_path.string());
  } catch (const std::exception& e) {
    return {Status::kFailed, StrCat("load: ", e.what())};
  }

  for (const fs::path& set_dir : data_sets) {
    const std::string set_name = set_dir.filename().string();
    std::vector<fs::path> input_files = NumberedFiles(set_dir, "input_");
    std::vector<fs::path> output_files = NumberedFiles(set_dir, "output_");
    if (input_files.size() > info.input_names.size()) {
      return {Status::kFailed, StrCat(set_name, ": ", input_files.size(), " input files but the ",
                                      "model has ", info.input_names.size(), " inputs")};
    }
    std::map<std::string, Tensor> feeds;
    for (size_t i = 0; i < input_files.size(); ++i) {
      feeds[info.input_names[i]] = MatchDeclaredType(
          onnx_import::LoadTensorProtoFile(input_files[i].string()), info.input_types[i]);
    }
    std::vector<Tensor> actual;
    try {
      actual = RunBackend(model_path.string(), *model, feeds);
    } catch (const std::exception& e) {
      return {Status::kFailed, StrCat(set_name, ": run: ", e.what())};
    }
    if (actual.size() != output_files.size()) {
      return {Status::kFailed, StrCat(set_name, ": ", actual.size(), " outputs, expected ",
                                      output_files.size())};
    }
    for (size_t i = 0; i < output_files.size(); ++i) {
      Tensor expected = onnx_import::LoadTensorProtoFile(output_files[i].string());
      if (i < info.output_types.size()) {
        expected = MatchDeclaredType(expected, info.output_types[i]);
      }
      std::string label = i < model->outputs().size() ? model->outputs()[i].name : "";
      if (std::string diff = Compare(actual[i], expected); !diff.empty()) {
        return {Status::kFailed, StrCat(set_name, ": output ", i, " '", label, "': ", diff)};
      }
    }
  }
  return {Status::kPassed, ""};
}

Outcome RunTest(const TestCase& test) {
  auto start = std::chrono::steady_clock::now();
  Outcome outcome;
  try {
    outcome = RunTestUnguarded(test);
  } catch (const std::bad_alloc&) {
    outcome = {Status::kFailed, "out of memory (std::bad_alloc)"};
  } catch (const std::exception& e) {
    outcome = {Status::kFailed, e.what()};
  } catch (...) {
    outcome = {Status::kFailed, "unknown exception"};
  }
  outcome.reason = OneLine(outcome.reason);
  outcome.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return outcome;
}

// ---------------------------------------------------------------------------
// Forked execution: a child per test, at most `jobs` at a time. The child
// writes "<status char> <seconds> <reason>" to a pipe and exits.
// ---------------------------------------------------------------------------

struct Child {
  size_t test_index;
  pid_t pid;
  int fd;
  std::string output;
  std::chrono::steady_clock::time_point start;
  bool killed = false;
};

[[noreturn]] void ChildMain(const TestCase& test, int fd, const Options& options) {
  if (options.memory_limit_mb > 0) {
    rlim_t bytes = static_cast<rlim_t>(options.memory_limit_mb) << 20;
    rlimit limit{bytes, bytes};
    setrlimit(RLIMIT_AS, &limit);
  }
  Outcome outcome = RunTest(test);
  char code = outcome.status == Status::kPassed ? 'P'
              : outcome.status == Status::kSkipped ? 'S' : 'F';
  std::string message = StrCat(code, " ", outcome.seconds, " ", outcome.reason);
  const char* p = message.data();
  size_t left = message.size();
  while (left > 0) {
    ssize_t written = write(fd, p, left);
    if (written <= 0) break;
    p += written;
    left -= static_cast<size_t>(written);
  }
  close(fd);
  _exit(0);  // No static destructors or stdio flushes inherited from the parent.
}

Outcome FinishChild(Child& child, int wait_status) {
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - child.start).count();
  if (child.killed) return {Status::kFailed, StrCat("timed out after ", elapsed, " s"), elapsed};
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    return {Status::kFailed, StrCat("crashed with signal ", sig, " (", strsignal(sig), ")"),
            elapsed};
  }
  if (child.output.size() < 2) {
    return {Status::kFailed, StrCat("test process exited (status ", WEXITSTATUS(wait_status),
                                    ") without a result"), elapsed};
  }
  Outcome outcome;
  char code = child.output[0];
  outcome.status = code == 'P' ? Status::kPassed : code == 'S' ? Status::kSkipped : Status::kFailed;
  std::istringstream in(child.output.substr(2));
  in >> outcome.seconds;
  std::getline(in, outcome.reason);
  if (!outcome.reason.empty() && outcome.reason[0] == ' ') outcome.reason.erase(0, 1);
  return outcome;
}

template <typename OnDone>
void RunForked(const std::vector<TestCase>& tests, const Options& options, OnDone on_done) {
  std::vector<Child> running;
  size_t next = 0;
  const auto timeout = std::chrono::duration<double>(options.timeout_s);
  while (next < tests.size() || !running.empty()) {
    while (next < tests.size() && running.size() < static_cast<size_t>(options.jobs)) {
      int fds[2];
      if (pipe(fds) != 0) {
        on_done(next, Outcome{Status::kFailed, "pipe() failed", 0});
        ++next;
        continue;
      }
      std::fflush(stdout);
      std::cout.flush();
      pid_t pid = fork();
      if (pid == 0) {
        close(fds[0]);
        ChildMain(tests[next], fds[1], options);
      }
      close(fds[1]);
      if (pid < 0) {
        close(fds[0]);
        on_done(next, Outcome{Status::kFailed, "fork() failed", 0});
        ++next;
        continue;
      }
      running.push_back(Child{next, pid, fds[0], "", std::chrono::steady_clock::now()});
      ++next;
    }

    std::vector<pollfd> polls;
    for (const Child& c : running) polls.push_back(pollfd{c.fd, POLLIN, 0});
    poll(polls.data(), polls.size(), 100);
    for (size_t i = 0; i < running.size();) {
      Child& child = running[i];
      bool finished = false;
      if (polls[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buffer[4096];
        ssize_t n = read(child.fd, buffer, sizeof buffer);
        if (n > 0) {
          child.output.append(buffer, static_cast<size_t>(n));
        } else {
          finished = true;  // EOF: the child closed its end or died.
        }
      }
      if (!finished && !child.killed &&
          std::chrono::steady_clock::now() - child.start > timeout) {
        kill(child.pid, SIGKILL);
        child.killed = true;
      }
      if (finished) {
        int wait_status = 0;
        waitpid(child.pid, &wait_status, 0);
        close(child.fd);
        on_done(child.test_index, FinishChild(child, wait_status));
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
        polls.erase(polls.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Test discovery and expectations.
// ---------------------------------------------------------------------------

std::vector<TestCase> FindTests(const Options& options) {
  std::vector<TestCase> tests;
  for (const std::string& suite : options.suites) {
    fs::path suite_dir = fs::path(options.data_dir) / suite;
    if (!fs::is_directory(suite_dir)) {
      std::cerr << "warning: no suite folder " << suite_dir << "\n";
      continue;
    }
    std::vector<TestCase> found;
    for (const auto& entry : fs::directory_iterator(suite_dir)) {
      if (!entry.is_directory()) continue;
      TestCase test{suite, entry.path().filename().string(), entry.path()};
      bool selected = options.filters.empty();
      for (const std::string& f : options.filters) {
        selected |= test.id().find(f) != std::string::npos;
      }
      if (selected) found.push_back(test);
    }
    std::sort(found.begin(), found.end(),
              [](const TestCase& a, const TestCase& b) { return a.name < b.name; });
    tests.insert(tests.end(), found.begin(), found.end());
  }
  return tests;
}

// Lines "test_name  # reason" (or "suite/test_name"); blank lines and lines
// starting with '#' are ignored.
std::map<std::string, std::string> ReadExpectations(const std::string& path) {
  std::map<std::string, std::string> expected_failures;
  if (path.empty()) return expected_failures;
  std::ifstream file(path);
  KILN_CHECK(file.good(), "cannot read expectations file ", path);
  std::string line;
  while (std::getline(file, line)) {
    std::string reason;
    size_t hash = line.find('#');
    if (hash != std::string::npos) {
      reason = line.substr(hash + 1);
      line = line.substr(0, hash);
    }
    std::istringstream words(line);
    std::string name;
    if (!(words >> name)) continue;
    size_t b = reason.find_first_not_of(" \t");
    reason = b == std::string::npos ? "" : reason.substr(b);
    size_t e = reason.find_last_not_of(" \t\r");
    if (e != std::string::npos) reason.erase(e + 1);
    expected_failures[name] = reason.empty() ? "(no reason given)" : reason;
  }
  return expected_failures;
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"Runs the ONNX backend test suite on kiln's CPU backend"};
  app.add_option("--data-dir", options.data_dir, "Folder holding the suites")
      ->capture_default_str();
  app.add_option("--suites", options.suites, "Suites to run (comma separated)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--filter", options.filters,
                 "Run only tests whose 'suite/name' contains this (repeatable)");
  app.add_option("--expectations", options.expectations,
                 "File listing known failures: 'test_name  # reason' per line");
  app.add_flag("--verbose,-v", options.verbose,
               "Print every test with its time, and why tests were skipped");
  app.add_option("--jobs,-j", options.jobs, "Tests run in parallel")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "Seconds before a test is killed and failed")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--memory-limit-mb", options.memory_limit_mb,
                 "Address-space limit per test process (0 = none)")
      ->capture_default_str();
  app.add_option("--backend", options.backend, "cpu, or gpu (engines built per test, FP32)")
      ->check(CLI::IsMember({"cpu", "gpu"}));
  app.add_flag("--no-fork", options.no_fork,
               "Run tests in this process (for debuggers; a crash ends the run)");
  CLI11_PARSE(app, argc, argv);
  g_backend = options.backend;
  // CUDA reserves far more address space than it uses: no RLIMIT_AS on GPU.
  if (g_backend == "gpu") options.memory_limit_mb = 0;

  std::map<std::string, std::string> expected_failures;
  try {
    for (const std::string& path : options.expectations)
      expected_failures.merge(ReadExpectations(path));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  std::vector<TestCase> tests = FindTests(options);
  OpRegistry::Global();  // Build the registry once, before forking.

  int passed = 0, failed = 0, skipped = 0;
  std::vector<std::string> known_failures;
  std::map<std::string, int> skip_reasons;
  std::set<std::string> seen;
  auto start = std::chrono::steady_clock::now();

  auto on_done = [&](size_t index, const Outcome& outcome) {
    const TestCase& test = tests[index];
    seen.insert(test.name);
    seen.insert(test.id());
    const std::string* expectation = nullptr;
    if (auto it = expected_failures.find(test.id()); it != expected_failures.end()) {
      expectation = &it->second;
    } else if (auto it2 = expected_failures.find(test.name); it2 != expected_failures.end()) {
      expectation = &it2->second;
    }
    char timing[32];
    std::snprintf(timing, sizeof timing, "(%.2f s)", outcome.seconds);
    switch (outcome.status) {
      case Status::kPassed:
        if (expectation) {
          ++failed;
          std::cout << "UNEXPECTEDLY PASSED " << test.id()
                    << ": remove it from expectations (listed as: " << *expectation << ")\n";
        } else {
          ++passed;
          if (options.verbose) std::cout << "PASSED  " << test.id() << " " << timing << "\n";
        }
        break;
      case Status::kFailed:
        if (expectation) {
          known_failures.push_back(test.id() + ": " + *expectation);
          if (options.verbose) {
            std::cout << "KNOWN   " << test.id() << " " << timing << ": " << outcome.reason
                      << "\n";
          }
        } else {
          ++failed;
          std::cout << "FAILED  " << test.id();
          if (options.verbose) std::cout << " " << timing;
          std::cout << ": " << outcome.reason << "\n";
        }
        break;
      case Status::kSkipped:
        ++skipped;
        ++skip_reasons[outcome.reason];
        if (options.verbose) {
          std::cout << "SKIPPED " << test.id() << " " << timing << ": " << outcome.reason << "\n";
        }
        break;
    }
    std::cout.flush();
  };

  if (options.no_fork) {
    for (size_t i = 0; i < tests.size(); ++i) on_done(i, RunTest(tests[i]));
  } else {
    RunForked(tests, options, on_done);
  }

  if (!known_failures.empty()) {
    std::string files;
    for (const std::string& path : options.expectations) files += (files.empty() ? "" : ", ") + path;
    std::cout << "\nknown failures (" << files << "):\n";
    for (const std::string& line : known_failures) std::cout << "  " << line << "\n";
  }
  if (options.filters.empty()) {
    for (const auto& [name, reason] : expected_failures) {
      if (!seen.count(name)) {
        std::cout << "note: expectations list " << name << ", which is not in the run\n";
      }
    }
  }
  if (options.verbose && !skip_reasons.empty()) {
    // The most common skip reasons show which missing operators block most tests.
    std::vector<std::pair<int, std::string>> common;
    for (const auto& [reason, count] : skip_reasons) common.push_back({count, reason});
    std::sort(common.rbegin(), common.rend());
    std::cout << "\nmost common skip reasons:\n";
    for (size_t i = 0; i < common.size() && i < 15; ++i)
      std::cout << "  " << common[i].first << "  " << common[i].second << "\n";
  }
  double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (options.verbose) std::cout << "\n" << tests.size() << " tests in " << total << " s\n";
  std::cout << "\n" << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  if (!known_failures.empty()) std::cout << known_failures.size() << " known failures\n";
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kiln::conformance

int main(int argc, char** argv) { return kiln::conformance::Main(argc, argv); }
