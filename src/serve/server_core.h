// kiln serve's core: the model repository, per-model dynamic batchers and
// backends, and the statistics the protocol frontends (HTTP and gRPC, both
// speaking KServe v2 / the Triton extensions) report. Frontends only parse
// and format; everything they answer comes from ServerCore.
//
//   ServerCore core(options);            // scans the repository, loads models
//   InferResponse r = core.Infer(request);   // blocking; thread-safe
//   core.InferAsync(request, callback);      // frontends that do not block
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::serve {

// KServe v2 datatype names ("FP32", "INT64", "BOOL", "BYTES", ...).
const char* KServeDatatype(DType dtype);
// Throws (a kBadRequest-worthy kiln::Error) for an unknown or unsupported name.
DType DTypeFromKServe(const std::string& datatype);

// Status of a failed call, mapped by each frontend onto its protocol
// (HTTP 400/404/503/500, gRPC INVALID_ARGUMENT/NOT_FOUND/UNAVAILABLE/INTERNAL).
enum class StatusCode { kOk, kBadRequest, kNotFound, kUnavailable, kInternal, kTimeout };

struct Status {
  StatusCode code = StatusCode::kOk;
  std::string message;
  bool ok() const { return code == StatusCode::kOk; }
};

struct TensorIO {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<int64_t> dims;  // -1 for variable dims (metadata only).
};

// What a model's config.json says (Triton's config.pbtxt fields, in JSON).
struct ModelConfig {
  std::string name;
  std::string platform = "kiln_onnx";  // Reported in metadata.
  std::string model_file = "model.onnx";  // Relative to the version folder or the model folder.
  int max_batch_size = 0;  // 0: no batching; inputs carry their full shape.
  std::vector<TensorIO> inputs, outputs;  // Without the batch dim when max_batch_size > 0.
  // Dynamic batching.
  bool dynamic_batching = false;
  std::vector<int> preferred_batch_sizes;
  int64_t max_queue_delay_us = 0;
  int max_queue_size = 0;  // 0: unbounded up to the server's default bound.
  int64_t default_timeout_us = 0;  // Per-request queue timeout; 0: none.
  // Instances.
  int instance_count = 1;
  std::string instance_kind = "auto";  // "cpu", "gpu" or "auto" (GPU when present).
  std::vector<int> gpus;
  std::string precision = "fp32";  // GPU engines: fp32, tf32, fp16, bf16.
  std::string raw_json;  // The config as loaded (returned by the config API).
};

// Triton's system shared memory extension: where a tensor's bytes live in a
// registered region (ServerCore::RegisterSystemSharedMemory).
struct SharedMemoryRef {
  std::string region;
  uint64_t offset = 0;  // Within the region.
  uint64_t byte_size = 0;
};

struct SharedMemoryRegionStatus {
  std::string name, key;  // key: the shm_open name of the memory object.
  uint64_t offset = 0, byte_size = 0;
};

// An input whose data is in shared memory (the core reads it from there).
struct SharedMemoryInput {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<int64_t> dims;
  SharedMemoryRef ref;  // byte_size must equal the tensor's size.
};

struct InferRequest {
  std::string model;
  std::string version;  // "" = latest.
  std::string id;       // Echoed in the response.
  std::vector<std::pair<std::string, Tensor>> inputs;  // Including the batch dim.
  std::vector<std::string> requested_outputs;          // Empty: all.
  int64_t timeout_us = 0;  // 0: the model's default.
  // When the frontend received the request (the start of the request duration
  // in the statistics); left default, ServerCore::InferAsync sets it.
  std::chrono::steady_clock::time_point received{};
  // Shared memory extension: inputs given as region references (the core
  // adds them to `inputs` as views of the mapped region), and requested
  // outputs (also listed in requested_outputs) that the core writes into a
  // region instead of returning them.
  std::vector<SharedMemoryInput> shared_memory_inputs;
  std::vector<std::pair<std::string, SharedMemoryRef>> shared_memory_outputs;
};

struct InferResponse {
  Status status;
  std::string model, version, id;
  std::vector<std::pair<std::string, Tensor>> outputs;
  // Outputs already written into shared memory, by name: they stay in
  // `outputs` (for their datatype and shape), and frontends answer them
  // without data (gRPC adds these parameters and an empty raw entry).
  std::map<std::string, SharedMemoryRef> shared_memory_outputs;
};

// Triton's statistics: request counts with cumulative steady_clock durations.
// Per request: queue = enqueue to batch start; compute_input = assembling the
// batch's inputs; compute_infer = the backend run; compute_output = splitting
// the outputs per request; success/failure = receipt to response ready. Every
// request in a batch is charged its batch's compute time (as Triton does), so
// queue + compute_* <= success_ns for each request.
struct BatchStats {  // One entry per executed batch size.
  uint64_t executions = 0;
  uint64_t compute_input_ns = 0, compute_infer_ns = 0, compute_output_ns = 0;
};

struct ModelStats {
  uint64_t success = 0, failure = 0, executions = 0, inferences = 0;
  uint64_t queue_ns = 0, compute_input_ns = 0, compute_infer_ns = 0, compute_output_ns = 0;
  std::map<int, uint64_t> batch_size_counts;  // Executions per batch size.
  uint64_t last_inference_ms = 0;             // Unix time.
  uint64_t success_ns = 0, failure_ns = 0;    // Request durations (receipt to response).
  std::map<int, BatchStats> batch_stats;      // Keyed by batch size (rows).
};

struct ServerOptions {
  std::string model_repository;
  size_t max_request_bytes = 64 << 20;  // Frontends reject bigger payloads.
  int default_max_queue_size = 1024;
  bool strict_model_config = false;  // true: a model folder needs a config.json.
  // Load/unload messages ("loaded model 'm' version 1 on cpu"); null: silent.
  std::function<void(const std::string&)> log;
};

class ServerCore {
 public:
  explicit ServerCore(ServerOptions options);
  ~ServerCore();  // Drains in-flight requests, then stops the batchers.

  bool Live() const;
  bool Ready() const;
  std::string ServerName() const { return "kiln"; }
  std::string ServerVersion() const;
  std::vector<std::string> Extensions() const;

  // Repository API.
  struct RepositoryEntry {
    std::string name, version, state, reason;  // state: "READY", "UNAVAILABLE", "LOADING".
  };
  std::vector<RepositoryEntry> Index() const;
  Status Load(const std::string& model);
  Status Unload(const std::string& model);

  bool ModelReady(const std::string& model, const std::string& version = "") const;
  // nullopt when the model is unknown or not loaded.
  std::optional<ModelConfig> Config(const std::string& model) const;
  std::optional<ModelStats> Stats(const std::string& model) const;
  std::vector<std::string> LoadedModels() const;

  using Callback = std::function<void(InferResponse)>;
  void InferAsync(InferRequest request, Callback done);
  InferResponse Infer(InferRequest request);

  // System shared memory extension (Triton's): regions are POSIX shared
  // memory objects the client created (shm_open `key`), mapped read/write.
  // Register: kBadRequest for a duplicate name, a zero size or a window past
  // the object's end; kNotFound when no object has that key. Status and
  // Unregister take "" for every region; Status of an unknown name is
  // kNotFound, Unregister of one succeeds (as in Triton). A region that
  // requests in flight use stays mapped until they finish.
  Status RegisterSystemSharedMemory(const std::string& name, const std::string& key,
                                    uint64_t offset, uint64_t byte_size);
  Status SystemSharedMemoryStatus(const std::string& name,
                                  std::vector<SharedMemoryRegionStatus>* regions) const;
  Status UnregisterSystemSharedMemory(const std::string& name);

  // Prometheus text exposition of every model's counters.
  std::string MetricsText() const;
  const ServerOptions& options() const;

  // Starts refusing new requests; in-flight and queued ones complete.
  void BeginShutdown();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::serve
