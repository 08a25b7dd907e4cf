// KServe v2 (Open Inference Protocol) JSON for the HTTP/REST frontend:
// tensors <-> JSON "data" (flat or nested), the binary tensor data extension
// (a JSON header of Inference-Header-Content-Length bytes followed by raw
// tensor bytes in input/output order), and the JSON documents the metadata,
// config, statistics and repository endpoints answer (Triton's field names,
// as tritonclient.http expects them).
//
// Everything here is pure (no sockets, no ServerCore calls) so it can be
// tested without a server. Client mistakes throw kiln::Error; the frontend
// answers them with HTTP 400.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/tensor.h"
#include "serve/server_core.h"

namespace kiln::serve {

// How the client wants each output sent back.
struct OutputFormat {
  bool binary_default = false;  // Request parameter "binary_data_output".
  // Outputs named in the request's "outputs" list with their "binary_data"
  // choice (nullopt: use binary_default). Empty list: all outputs.
  std::vector<std::pair<std::string, std::optional<bool>>> requested;
  bool BinaryFor(const std::string& output) const;
};

struct ParsedInferRequest {
  InferRequest request;
  OutputFormat format;
};

// Parses an infer request body. Inputs and requested outputs with the shared
// memory parameters ("shared_memory_region", "shared_memory_byte_size",
// optional "shared_memory_offset") go to the request's shared_memory_inputs
// / shared_memory_outputs. `header_length` is the value of the
// Inference-Header-Content-Length header (nullopt: the whole body is JSON).
// Throws kiln::Error naming what is wrong (malformed JSON, a missing field,
// a data/shape mismatch, binary sizes that do not add up, ...).
ParsedInferRequest ParseInferRequest(std::string_view body, std::optional<size_t> header_length,
                                     const std::string& model, const std::string& version);

// Builds a tensor from a JSON "data" value (flat or nested array, or a single
// value for rank 0) with the given KServe datatype and shape.
Tensor TensorFromJson(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                      const nlohmann::json& data);
// Flat JSON array of a tensor's elements (booleans for BOOL, numbers otherwise).
nlohmann::json TensorToJson(const Tensor& tensor);

struct FormattedResponse {
  std::string body;
  size_t header_length = 0;  // JSON header size when binary outputs follow.
  bool binary = false;       // True: set Inference-Header-Content-Length.
};
// Formats a successful infer response (outputs in the order the core returns
// them, binary ones appended after the JSON header in that same order;
// outputs written to shared memory carry neither data nor parameters, as in
// Triton).
FormattedResponse FormatInferResponse(const InferResponse& response, const OutputFormat& format);

// {"error": message}
std::string ErrorJson(const std::string& message);

// Document builders for the non-infer endpoints.
nlohmann::json ServerMetadataJson(const std::string& name, const std::string& version,
                                  const std::vector<std::string>& extensions);
nlohmann::json ModelMetadataJson(const ModelConfig& config, const std::vector<std::string>& versions);
// Triton's model configuration JSON ("input"/"output" with "data_type":
// "TYPE_FP32", "dims", "max_batch_size", "dynamic_batching", "instance_group").
// Fields of the config file that kiln does not model are kept as written.
nlohmann::json ModelConfigJson(const ModelConfig& config);
// One entry of "model_stats".
nlohmann::json ModelStatsJson(const std::string& name, const std::string& version,
                              const ModelStats& stats);
nlohmann::json RepositoryIndexJson(const std::vector<ServerCore::RepositoryEntry>& entries,
                                   bool ready_only);
// The system shared memory status reply: [{"name", "key", "offset", "byte_size"}, ...].
nlohmann::json SharedMemoryStatusJson(const std::vector<SharedMemoryRegionStatus>& regions);

// "TYPE_FP32" for kFloat32 (Triton's model config data types).
std::string TritonConfigDatatype(DType dtype);

}  // namespace kiln::serve
