#include "onnx/importer.h"

namespace kiln::onnx_import {

std::unique_ptr<ir::Graph> ImportModelFile(const std::string& path) {
  Fail("ONNX import is not implemented yet (", path, ")");
}

}  // namespace kiln::onnx_import
