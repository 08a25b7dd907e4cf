#include "kiln/kiln.h"

#include "cpu/executor.h"
#include "ir/graph.h"
#include "onnx/importer.h"
#include "passes/passes.h"

namespace kiln {

std::string TensorDesc::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ",";
    if (dims[i] >= 0) {
      s += std::to_string(dims[i]);
    } else {
      s += (i < dim_names.size() && !dim_names[i].empty()) ? dim_names[i] : "?";
    }
  }
  return s + "]";
}

namespace {
TensorDesc Describe(const ir::Value& v) {
  TensorDesc d;
  d.name = v.name;
  d.dtype = v.type.dtype;
  if (v.type.has_rank()) {
    for (const ir::Dim& dim : *v.type.shape) {
      d.dims.push_back(dim.is_known() ? dim.value : -1);
      d.dim_names.push_back(dim.is_known() ? "" : dim.symbol);
    }
  }
  return d;
}
}  // namespace

Model::Model(std::unique_ptr<ir::Graph> graph) : graph_(std::move(graph)) {
  for (const ir::Value* v : graph_->inputs()) inputs_.push_back(Describe(*v));
  for (const ir::Value* v : graph_->outputs()) outputs_.push_back(Describe(*v));
}

Model::~Model() = default;

std::unique_ptr<Model> Model::Load(const std::string& path, const LoadOptions& options) {
  std::unique_ptr<ir::Graph> graph = onnx_import::ImportModelFile(path);
  if (options.optimize) {
    passes::Optimize(*graph);
  } else {
    passes::InferShapes(*graph);
  }
  return std::unique_ptr<Model>(new Model(std::move(graph)));
}

std::vector<Tensor> Model::RunCpu(const std::map<std::string, Tensor>& inputs) const {
  cpu::Executor executor(*graph_);
  return executor.Run(inputs);
}

}  // namespace kiln
