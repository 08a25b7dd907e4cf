#include "serve/server_core.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <sstream>

#include "kiln/error.h"
#include "kiln/kiln.h"
#include "serve/backend.h"
#include "serve/batcher.h"
#include "serve/model_repository.h"
#include "serve/shared_memory.h"

namespace kiln::serve {

namespace fs = std::filesystem;

const char* KServeDatatype(DType dtype) {
  switch (dtype) {
    case DType::kBool: return "BOOL";
    case DType::kUInt8: return "UINT8";
    case DType::kUInt16: return "UINT16";
    case DType::kUInt32: return "UINT32";
    case DType::kUInt64: return "UINT64";
    case DType::kInt8: return "INT8";
    case DType::kInt16: return "INT16";
    case DType::kInt32: return "INT32";
    case DType::kInt64: return "INT64";
    case DType::kFloat16: return "FP16";
    case DType::kFloat32: return "FP32";
    case DType::kFloat64: return "FP64";
    case DType::kBFloat16: return "BF16";
    case DType::kString: return "BYTES";
    case DType::kUndefined: break;
  }
  return "INVALID";
}

DType DTypeFromKServe(const std::string& datatype) {
  static const std::pair<const char*, DType> kTypes[] = {
      {"BOOL", DType::kBool},     {"UINT8", DType::kUInt8},     {"UINT16", DType::kUInt16},
      {"UINT32", DType::kUInt32}, {"UINT64", DType::kUInt64},   {"INT8", DType::kInt8},
      {"INT16", DType::kInt16},   {"INT32", DType::kInt32},     {"INT64", DType::kInt64},
      {"FP16", DType::kFloat16},  {"FP32", DType::kFloat32},    {"FP64", DType::kFloat64},
      {"BF16", DType::kBFloat16}};
  for (const auto& [name, dtype] : kTypes) {
    if (datatype == name) return dtype;
  }
  if (datatype == "BYTES") Fail("datatype BYTES (strings) is not supported by kiln");
  Fail("unknown datatype '", datatype,
       "' (expected BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32 or FP64)");
}

namespace {

struct ModelEntry {
  std::string version;
  std::string state = "UNAVAILABLE";
  std::string reason;
  std::shared_ptr<const ModelConfig> config;
  std::shared_ptr<Batcher> batcher;
  std::shared_ptr<StatsBox> stats;
};

std::string Joined(const std::vector<TensorIO>& list) {
  std::string s;
  for (const TensorIO& io : list) s += (s.empty() ? "" : ", ") + io.name;
  return s;
}

std::vector<int64_t> ExpectedDims(const TensorIO& io, const ModelConfig& c) {
  std::vector<int64_t> dims = io.dims;
  if (c.max_batch_size > 0) dims.insert(dims.begin(), -1);
  return dims;
}

Status BadRequest(std::string message) { return {StatusCode::kBadRequest, std::move(message)}; }

Status ValidateRequest(const InferRequest& r, const ModelConfig& c) {
  const std::string model = "model '" + c.name + "'";
  if (r.inputs.empty())
    return BadRequest("request for " + model + " has no inputs (expected: " + Joined(c.inputs) +
                      ")");
  std::set<std::string> seen;
  int64_t batch = -1;
  std::string batch_input;
  for (const auto& [name, t] : r.inputs) {
    auto it = std::find_if(c.inputs.begin(), c.inputs.end(),
                           [&](const TensorIO& io) { return io.name == name; });
    if (it == c.inputs.end())
      return BadRequest("unexpected input '" + name + "' for " + model + " (inputs: " +
                        Joined(c.inputs) + ")");
    if (!seen.insert(name).second) return BadRequest("input '" + name + "' is given twice");
    if (!t.defined()) return BadRequest("input '" + name + "' has no data");
    if (t.dtype() != it->dtype)
      return BadRequest("input '" + name + "' has datatype " + KServeDatatype(t.dtype()) + ", but " +
                        model + " expects " + KServeDatatype(it->dtype));
    const std::vector<int64_t> expected = ExpectedDims(*it, c);
    bool match = t.dims().size() == expected.size();
    for (size_t i = 0; match && i < expected.size(); ++i)
      match = expected[i] == -1 ? t.dims()[i] >= 0 : expected[i] == t.dims()[i];
    if (!match)
      return BadRequest("input '" + name + "' has shape " + DimsToString(t.dims()) + ", but " +
                        model + " expects " + DimsToString(expected) +
                        (c.max_batch_size > 0 ? " (the first dim is the batch)" : ""));
    if (c.max_batch_size > 0) {
      const int64_t b = t.dim(0);
      if (b < 1) return BadRequest("input '" + name + "' has batch size 0");
      if (b > c.max_batch_size)
        return BadRequest("input '" + name + "' has batch size " + std::to_string(b) +
                          ", larger than " + model + "'s max_batch_size " +
                          std::to_string(c.max_batch_size));
      if (batch >= 0 && b != batch)
        return BadRequest("input '" + name + "' has batch size " + std::to_string(b) +
                          " but input '" + batch_input + "' has " + std::to_string(batch));
      batch = b;
      batch_input = name;
    }
  }
  for (const TensorIO& io : c.inputs) {
    if (!seen.count(io.name))
      return BadRequest(model + " needs input '" + io.name + "', which the request lacks");
  }
  std::set<std::string> outputs_seen;
  for (const std::string& name : r.requested_outputs) {
    if (std::none_of(c.outputs.begin(), c.outputs.end(),
                     [&](const TensorIO& io) { return io.name == name; }))
      return BadRequest(model + " has no output '" + name + "' (outputs: " + Joined(c.outputs) +
                        ")");
    if (!outputs_seen.insert(name).second)
      return BadRequest("output '" + name + "' is requested twice");
  }
  return {};
}

// A requested output that the core writes into a shared memory region.
struct SharedMemoryOutput {
  std::string name;
  SharedMemoryRef ref;
  std::shared_ptr<SharedMemoryRegion> region;  // Keeps it mapped until the reply.
  uint8_t* data = nullptr;
};

// Turns the request's shared memory inputs into tensors (views of the mapped
// regions, copies only when the bytes are misaligned for the dtype) and
// resolves its shared memory outputs, checking sizes and bounds.
Status ResolveSharedMemory(const SharedMemoryRegistry& registry, InferRequest& r,
                           std::vector<SharedMemoryOutput>* outputs) {
  for (const SharedMemoryInput& in : r.shared_memory_inputs) {
    const std::string what = "input '" + in.name + "'";
    const size_t element = DTypeSize(in.dtype);
    if (element == 0)
      return BadRequest(what + ": datatype " + KServeDatatype(in.dtype) + " is not supported");
    uint64_t numel = 1;
    for (int64_t d : in.dims) {
      if (d < 0) return BadRequest(what + ": shape " + DimsToString(in.dims) + " has a negative dim");
      if (d > 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / static_cast<uint64_t>(d))
        return BadRequest(what + ": shape " + DimsToString(in.dims) + " is too large");
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t expected = numel * element;
    if (in.ref.byte_size != expected)
      return BadRequest(what + ": shared_memory_byte_size is " + std::to_string(in.ref.byte_size) +
                        " bytes but " + KServeDatatype(in.dtype) + DimsToString(in.dims) +
                        " needs " + std::to_string(expected));
    std::shared_ptr<SharedMemoryRegion> region;
    uint8_t* data = nullptr;
    Status s = registry.Resolve(in.ref, what, &region, &data);
    if (!s.ok()) return s;
    Tensor t;
    if (reinterpret_cast<uintptr_t>(data) % element == 0) {
      t = Tensor::Borrow(in.dtype, in.dims, region, data);
    } else {
      t = Tensor(in.dtype, in.dims);
      if (expected > 0) std::memcpy(t.raw_data(), data, expected);
    }
    r.inputs.emplace_back(in.name, std::move(t));
  }
  r.shared_memory_inputs.clear();
  std::set<std::string> seen;
  for (const auto& [name, ref] : r.shared_memory_outputs) {
    const std::string what = "output '" + name + "'";
    if (!seen.insert(name).second) return BadRequest(what + " is requested twice");
    SharedMemoryOutput out{name, ref, nullptr, nullptr};
    Status s = registry.Resolve(ref, what, &out.region, &out.data);
    if (!s.ok()) return s;
    if (std::find(r.requested_outputs.begin(), r.requested_outputs.end(), name) ==
        r.requested_outputs.end())
      r.requested_outputs.push_back(name);
    outputs->push_back(std::move(out));
  }
  r.shared_memory_outputs.clear();
  return {};
}

// Copies the outputs that go to shared memory into their regions; a region
// too small for its output fails the response (as in Triton).
void WriteSharedMemoryOutputs(const std::vector<SharedMemoryOutput>& targets, InferResponse& r) {
  for (const SharedMemoryOutput& target : targets) {
    auto it = std::find_if(r.outputs.begin(), r.outputs.end(),
                           [&](const auto& o) { return o.first == target.name; });
    if (it == r.outputs.end()) {
      r.status = {StatusCode::kInternal,
                  "the model produced no output '" + target.name + "' for shared memory"};
      return;
    }
    const Tensor& t = it->second;
    if (t.nbytes() > target.ref.byte_size) {
      r.status = BadRequest("shared memory size specified with the request for output '" +
                            target.name + "' (" + std::to_string(target.ref.byte_size) +
                            " bytes) should be at least " + std::to_string(t.nbytes()) +
                            " bytes to hold the results");
      return;
    }
    if (t.nbytes() > 0) std::memcpy(target.data, t.raw_data(), t.nbytes());
    r.shared_memory_outputs[target.name] = target.ref;
  }
}

bool IsSafeModelName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

std::string EscapeLabel(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

uint64_t ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace

struct ServerCore::Impl {
  ServerOptions options;
  mutable std::mutex mu;                     // Guards models.
  std::map<std::string, ModelEntry> models;  // Every model ever loaded or tried.
  std::mutex load_mu;                        // Serializes Load/Unload.
  std::atomic<bool> shutting_down{false};
  SharedMemoryRegistry shared_memory;  // The system shared memory extension's regions.

  void Log(const std::string& line) const {
    if (options.log) options.log(line);
  }

  std::string ModelDir(const std::string& name) const {
    return (fs::path(options.model_repository) / name).string();
  }

  Status Load(const std::string& name) {
    if (shutting_down) return {StatusCode::kUnavailable, "the server is shutting down"};
    if (!IsSafeModelName(name))
      return {StatusCode::kBadRequest, "invalid model name '" + name + "'"};
    std::lock_guard<std::mutex> load_lock(load_mu);
    const std::string dir = ModelDir(name);
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      return {StatusCode::kNotFound, "model '" + name + "' has no folder in the model repository '" +
                                         options.model_repository + "'"};
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      ModelEntry& e = models[name];
      if (e.state != "READY") {
        e.state = "LOADING";
        e.reason.clear();
      }
    }
    auto config = std::make_shared<ModelConfig>();
    std::shared_ptr<Backend> backend;
    std::string version, note;
    try {
      const std::string config_path = (fs::path(dir) / "config.json").string();
      const std::string pbtxt_path = (fs::path(dir) / "config.pbtxt").string();
      const bool has_json = fs::exists(config_path, ec), has_pbtxt = fs::exists(pbtxt_path, ec);
      KILN_CHECK(!(has_json && has_pbtxt), "model '", name,
                 "' has both config.json and config.pbtxt: keep one");
      if (has_json) {
        *config = ParseModelConfig(ReadTextFile(config_path), name);
      } else if (has_pbtxt) {
        *config = ParseModelConfigPbtxt(ReadTextFile(pbtxt_path), name);
      } else {
        KILN_CHECK(!options.strict_model_config, "model '", name,
                   "' has no config.json or config.pbtxt (strict model config is on)");
        config->name = name;
      }
      const ModelLocation location = LocateModelFile(dir, *config);
      version = location.version;
      std::shared_ptr<const Model> model;
      try {
        model = Model::Load(location.path);
      } catch (const Error& e) {
        Fail("model '", name, "': ", e.what());
      }
      CompleteAndValidateConfig(*config, *model);
      config->raw_json = ConfigToJson(*config);
      backend = CreateBackend(*config, location.path, model, &note);
    } catch (const std::exception& e) {
      std::shared_ptr<Batcher> old;
      {
        std::lock_guard<std::mutex> lock(mu);
        ModelEntry& entry = models[name];
        old = std::move(entry.batcher);
        entry = ModelEntry{};
        entry.state = "UNAVAILABLE";
        entry.reason = e.what();
      }
      if (old) old->Shutdown();  // A failed reload takes the old version down, as in Triton.
      Log(std::string("failed to load model '") + name + "': " + e.what());
      return {StatusCode::kBadRequest, e.what()};
    }
    auto stats = std::make_shared<StatsBox>();
    auto batcher = std::make_shared<Batcher>(*config, version, backend, stats,
                                             options.default_max_queue_size);
    std::shared_ptr<Batcher> old;
    {
      std::lock_guard<std::mutex> lock(mu);
      ModelEntry& entry = models[name];
      old = std::move(entry.batcher);
      entry.version = version;
      entry.state = "READY";
      entry.reason.clear();
      entry.config = config;
      entry.batcher = batcher;
      entry.stats = stats;
    }
    if (old) old->Shutdown();  // The previous version drains its queue.
    std::ostringstream msg;
    msg << "loaded model '" << name << "' version " << version << " on " << backend->Kind() << " ("
        << config->instance_count << " instance" << (config->instance_count == 1 ? "" : "s")
        << ", max_batch_size " << config->max_batch_size
        << (config->dynamic_batching ? ", dynamic batching" : "") << ")";
    if (!note.empty() && backend->Kind() == "cpu" && config->instance_kind != "cpu")
      msg << "; cpu because " << note;
    Log(msg.str());
    return {};
  }

  Status Unload(const std::string& name) {
    std::lock_guard<std::mutex> load_lock(load_mu);
    std::shared_ptr<Batcher> old;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = models.find(name);
      if (it == models.end()) {
        std::error_code ec;
        if (IsSafeModelName(name) && fs::is_directory(ModelDir(name), ec)) return {};
        return {StatusCode::kNotFound, "unknown model '" + name + "'"};
      }
      ModelEntry& e = it->second;
      old = std::move(e.batcher);
      e.config.reset();
      e.stats.reset();
      e.state = "UNAVAILABLE";
      e.reason = "unloaded";
    }
    if (old) {
      old->Shutdown();  // Queued requests still complete.
      Log("unloaded model '" + name + "'");
    }
    return {};
  }
};

ServerCore::ServerCore(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  for (const std::string& name : ListModelFolders(impl_->options.model_repository)) {
    impl_->Load(name);  // Failures are recorded as UNAVAILABLE with the reason.
  }
}

ServerCore::~ServerCore() {
  BeginShutdown();
  std::vector<std::shared_ptr<Batcher>> batchers;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& [name, e] : impl_->models) {
      if (e.batcher) batchers.push_back(e.batcher);
    }
  }
  for (auto& b : batchers) b->Shutdown();  // Drain queued requests, join workers.
}

bool ServerCore::Live() const { return true; }
bool ServerCore::Ready() const { return !impl_->shutting_down; }
std::string ServerCore::ServerVersion() const { return "0.1.0"; }
std::vector<std::string> ServerCore::Extensions() const {
  return {"binary_tensor_data", "model_repository", "model_configuration",
          "statistics", "system_shared_memory"};
}

Status ServerCore::RegisterSystemSharedMemory(const std::string& name, const std::string& key,
                                              uint64_t offset, uint64_t byte_size) {
  return impl_->shared_memory.Register(name, key, offset, byte_size);
}

Status ServerCore::SystemSharedMemoryStatus(const std::string& name,
                                            std::vector<SharedMemoryRegionStatus>* regions) const {
  return impl_->shared_memory.GetStatus(name, regions);
}

Status ServerCore::UnregisterSystemSharedMemory(const std::string& name) {
  return impl_->shared_memory.Unregister(name);
}
const ServerOptions& ServerCore::options() const { return impl_->options; }
void ServerCore::BeginShutdown() { impl_->shutting_down = true; }

std::vector<ServerCore::RepositoryEntry> ServerCore::Index() const {
  std::vector<std::string> folders;
  try {
    folders = ListModelFolders(impl_->options.model_repository);
  } catch (const Error&) {
    // The repository vanished: still list what is loaded.
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::set<std::string> names(folders.begin(), folders.end());
  for (const auto& [name, e] : impl_->models) names.insert(name);
  std::vector<RepositoryEntry> out;
  for (const std::string& name : names) {
    auto it = impl_->models.find(name);
    if (it == impl_->models.end()) {
      out.push_back({name, "", "UNAVAILABLE", "not loaded"});
    } else {
      out.push_back({name, it->second.version, it->second.state, it->second.reason});
    }
  }
  return out;
}

Status ServerCore::Load(const std::string& model) { return impl_->Load(model); }
Status ServerCore::Unload(const std::string& model) { return impl_->Unload(model); }

bool ServerCore::ModelReady(const std::string& model, const std::string& version) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->models.find(model);
  return it != impl_->models.end() && it->second.state == "READY" &&
         (version.empty() || version == it->second.version);
}

std::optional<ModelConfig> ServerCore::Config(const std::string& model) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->models.find(model);
  if (it == impl_->models.end() || !it->second.config) return std::nullopt;
  return *it->second.config;
}

std::optional<ModelStats> ServerCore::Stats(const std::string& model) const {
  std::shared_ptr<StatsBox> box;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->models.find(model);
    if (it == impl_->models.end() || !it->second.stats) return std::nullopt;
    box = it->second.stats;
  }
  std::lock_guard<std::mutex> lock(box->mu);
  return box->stats;
}

std::vector<std::string> ServerCore::LoadedModels() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<std::string> names;
  for (const auto& [name, e] : impl_->models) {
    if (e.state == "READY") names.push_back(name);
  }
  return names;
}

void ServerCore::InferAsync(InferRequest request, Callback done) {
  if (request.received == std::chrono::steady_clock::time_point{})
    request.received = std::chrono::steady_clock::now();
  InferResponse response;
  response.model = request.model;
  response.version = request.version;
  response.id = request.id;
  auto fail = [&](StatusCode code, std::string message) {
    response.status = {code, std::move(message)};
    if (done) done(std::move(response));
  };
  if (impl_->shutting_down)
    return fail(StatusCode::kUnavailable, "the server is shutting down and accepts no new requests");
  std::shared_ptr<const ModelConfig> config;
  std::shared_ptr<Batcher> batcher;
  std::shared_ptr<StatsBox> stats;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->models.find(request.model);
    if (it == impl_->models.end()) {
      return fail(StatusCode::kNotFound, "unknown model '" + request.model + "'");
    }
    const ModelEntry& e = it->second;
    if (e.state != "READY") {
      return fail(StatusCode::kUnavailable,
                  "model '" + request.model + "' is not ready (" + e.state +
                      (e.reason.empty() ? "" : ": " + e.reason) + ")");
    }
    if (!request.version.empty() && request.version != e.version) {
      return fail(StatusCode::kNotFound, "model '" + request.model + "' has no version '" +
                                             request.version + "' (serving version " + e.version +
                                             ")");
    }
    config = e.config;
    batcher = e.batcher;
    stats = e.stats;
  }
  std::vector<SharedMemoryOutput> shared_memory_outputs;
  Status s = ResolveSharedMemory(impl_->shared_memory, request, &shared_memory_outputs);
  if (s.ok()) s = ValidateRequest(request, *config);
  if (!s.ok()) {
    stats->AddFailure(request.received);
    return fail(s.code, s.message);
  }
  if (!shared_memory_outputs.empty()) {
    done = [targets = std::move(shared_memory_outputs), done = std::move(done)](InferResponse r) {
      if (r.status.ok()) WriteSharedMemoryOutputs(targets, r);
      if (done) done(std::move(r));
    };
  }
  batcher->Enqueue(std::move(request), std::move(done));
}

InferResponse ServerCore::Infer(InferRequest request) {
  auto promise = std::make_shared<std::promise<InferResponse>>();
  std::future<InferResponse> future = promise->get_future();
  InferAsync(std::move(request), [promise](InferResponse r) { promise->set_value(std::move(r)); });
  return future.get();
}

std::string ServerCore::MetricsText() const {
  struct Row {
    std::string name, version;
    ModelStats stats;
    size_t pending = 0;
  };
  std::vector<Row> rows;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (const auto& [name, e] : impl_->models) {
      if (!e.stats) continue;
      rows.emplace_back();
      Row& row = rows.back();
      row.name = name;
      row.version = e.version;
      row.pending = e.batcher ? e.batcher->QueueSize() : 0;
      std::lock_guard<std::mutex> stats_lock(e.stats->mu);
      row.stats = e.stats->stats;
    }
  }
  std::ostringstream out;
  auto labels = [](const Row& r) {
    return "{model=\"" + EscapeLabel(r.name) + "\",version=\"" + EscapeLabel(r.version) + "\"}";
  };
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
    for (const Row& r : rows) out << name << labels(r) << " " << value(r) << "\n";
  };
  family("nv_inference_request_success", "counter",
         "Number of successful inference requests, all batch sizes",
         [](const Row& r) { return r.stats.success; });
  family("nv_inference_request_failure", "counter",
         "Number of failed inference requests, all batch sizes",
         [](const Row& r) { return r.stats.failure; });
  family("nv_inference_count", "counter",
         "Number of inferences performed (a batch of n counts n)",
         [](const Row& r) { return r.stats.inferences; });
  family("nv_inference_exec_count", "counter",
         "Number of model executions performed (a batch counts once)",
         [](const Row& r) { return r.stats.executions; });
  family("nv_inference_pending_request_count", "gauge",
         "Requests waiting in the model's queue",
         [](const Row& r) { return static_cast<uint64_t>(r.pending); });
  family("nv_inference_request_duration_us", "counter",
         "Cumulative duration of successful requests, receipt to response",
         [](const Row& r) { return r.stats.success_ns / 1000; });
  family("nv_inference_queue_duration_us", "counter", "Cumulative time requests spent queued",
         [](const Row& r) { return r.stats.queue_ns / 1000; });
  family("nv_inference_compute_input_duration_us", "counter",
         "Cumulative time preparing inputs (batch concatenation)",
         [](const Row& r) { return r.stats.compute_input_ns / 1000; });
  family("nv_inference_compute_infer_duration_us", "counter",
         "Cumulative time running the model",
         [](const Row& r) { return r.stats.compute_infer_ns / 1000; });
  family("nv_inference_compute_output_duration_us", "counter",
         "Cumulative time splitting and preparing outputs",
         [](const Row& r) { return r.stats.compute_output_ns / 1000; });
  out << "# HELP kiln_batch_size Batch size of each model execution\n"
      << "# TYPE kiln_batch_size histogram\n";
  static const int kBounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  for (const Row& r : rows) {
    const std::string base =
        "model=\"" + EscapeLabel(r.name) + "\",version=\"" + EscapeLabel(r.version) + "\"";
    uint64_t count = 0, sum = 0;
    for (const auto& [size, n] : r.stats.batch_size_counts) {
      count += n;
      sum += static_cast<uint64_t>(size) * n;
    }
    for (int bound : kBounds) {
      uint64_t cumulative = 0;
      for (const auto& [size, n] : r.stats.batch_size_counts) {
        if (size <= bound) cumulative += n;
      }
      out << "kiln_batch_size_bucket{" << base << ",le=\"" << bound << "\"} " << cumulative << "\n";
    }
    out << "kiln_batch_size_bucket{" << base << ",le=\"+Inf\"} " << count << "\n";
    out << "kiln_batch_size_sum{" << base << "} " << sum << "\n";
    out << "kiln_batch_size_count{" << base << "} " << count << "\n";
  }
  out << "# HELP kiln_process_resident_bytes Resident memory of the server process\n"
      << "# TYPE kiln_process_resident_bytes gauge\n"
      << "kiln_process_resident_bytes " << ResidentBytes() << "\n";
  return out.str();
}

}  // namespace kiln::serve
