// The model repository on disk (Triton's layout):
//
//   DIR/<model>/config.json          Triton's config.pbtxt fields, in JSON (optional)
//   DIR/<model>/config.pbtxt         or Triton's own config (protobuf text format)
//   DIR/<model>/<version>/model.onnx numeric version folders; the highest is served
//   DIR/<model>/model.onnx           or the model directly in the model folder
//
// Parsing and validating a config lives here; ServerCore owns the loaded state.
#pragma once

#include <string>
#include <vector>

#include "kiln/kiln.h"
#include "serve/server_core.h"

namespace kiln::serve {

// The model folders of a repository, sorted (every directory, loadable or
// not). Throws when `repository` is not a readable directory.
std::vector<std::string> ListModelFolders(const std::string& repository);

// Parses config.json text. `model_name` is the folder name: a "name" field
// must match it. Throws kiln::Error naming the model and the field at fault.
ModelConfig ParseModelConfig(const std::string& json_text, const std::string& model_name);

// Parses Triton's config.pbtxt (protobuf text of ModelConfig; the message in
// third_party/kserve/grpc_service.proto). It means the same as the config.json
// with the same fields; Triton fields that change nothing for kiln (version
// policy, warm-up, optimization hints, ...) are skipped, other unknown fields
// are errors. Throws kiln::Error naming the model, the line and the field.
ModelConfig ParseModelConfigPbtxt(const std::string& text, const std::string& model_name);

// Where a model's ONNX file is: the highest numeric version folder holding
// config.model_file, else the model folder itself.
struct ModelLocation {
  std::string version;  // "1" for a file directly in the model folder.
  std::string path;
};
ModelLocation LocateModelFile(const std::string& model_dir, const ModelConfig& config);

// Fills what the config leaves out from the model (inputs/outputs when none
// are listed) and checks the rest against it: names, dtypes, ranks (plus the
// batch dim when max_batch_size > 0) and known dims. Throws kiln::Error with
// a message naming the model and the tensor.
void CompleteAndValidateConfig(ModelConfig& config, const Model& model);

// The complete config as Triton-style JSON (what the config API returns).
std::string ConfigToJson(const ModelConfig& config);

// "TYPE_FP32" <-> DType.
DType DTypeFromConfig(const std::string& data_type);
std::string ConfigDatatype(DType dtype);

// Reads a whole file; throws naming the path.
std::string ReadTextFile(const std::string& path);

}  // namespace kiln::serve
