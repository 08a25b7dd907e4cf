// ONNX import: ModelProto -> ir::Graph.
//
// Handles opsets kMinSupportedOpset..kMaxSupportedOpset of the default
// domain, initializers (aliased, not copied, where the bytes allow), Constant
// nodes, external-data tensors (paths relative to the model's folder), named
// dynamic dims, and graphs whose initializers are also listed as inputs
// (older exporters). Subgraph attributes (If/Loop/Scan bodies) are rejected.
// Every error names the file and the tensor, node or field at fault.
#pragma once

#include <memory>
#include <string>

#include "ir/graph.h"

namespace onnx {
class TensorProto;
}

namespace kiln::onnx_import {

// Reads and imports a .onnx file. External data is resolved next to it.
std::unique_ptr<ir::Graph> ImportModelFile(const std::string& path);
// Imports a serialized ModelProto; `base_dir` resolves external data ("" =
// external data not allowed). `source` names the input in error messages.
std::unique_ptr<ir::Graph> ImportModelBytes(const std::string& bytes, const std::string& base_dir,
                                            const std::string& source = "<memory>");

// Converts a TensorProto (inline or external data) to a Tensor.
Tensor TensorFromProto(const ::onnx::TensorProto& proto, const std::string& base_dir);
// Reads a serialized TensorProto file (the ONNX test suite's input_0.pb ...).
// The returned name is the proto's name field (may be empty).
Tensor LoadTensorProtoFile(const std::string& path, std::string* name = nullptr);
// Writes a tensor as a serialized TensorProto.
void SaveTensorProtoFile(const Tensor& tensor, const std::string& name, const std::string& path);

}  // namespace kiln::onnx_import
