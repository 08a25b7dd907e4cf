// kiln's public C++ API (build time / run time split as in TensorRT):
//
//   auto model = kiln::Model::Load("resnet50.onnx");   // import + optimize
//   auto outputs = model->RunCpu({{"input", image}});  // CPU reference run
//
// The GPU builder/engine/execution-context API joins this header with the
// CUDA backend.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/error.h"
#include "kiln/tensor.h"

namespace kiln {

namespace ir {
class Graph;
}

// A model input or output as declared by the model.
struct TensorDesc {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<int64_t> dims;             // -1 marks a dynamic dim.
  std::vector<std::string> dim_names;    // The symbol of each dynamic dim ("" if unnamed).
  std::string ShapeString() const;       // "[batch,3,224,224]"
  size_t nbytes() const { return ByteSize(dtype, dims); }  // Concrete dims only.
};

struct LoadOptions {
  bool optimize = true;  // Run the target-independent passes after import.
};

class Model {
 public:
  // Imports an ONNX file; throws kiln::Error naming the file and what is wrong.
  static std::unique_ptr<Model> Load(const std::string& path, const LoadOptions& options = {});
  ~Model();

  const std::vector<TensorDesc>& inputs() const { return inputs_; }
  const std::vector<TensorDesc>& outputs() const { return outputs_; }
  const ir::Graph& graph() const { return *graph_; }

  // Runs on the CPU reference backend. `inputs` maps input names to tensors;
  // returns outputs in declaration order.
  std::vector<Tensor> RunCpu(const std::map<std::string, Tensor>& inputs) const;

 private:
  explicit Model(std::unique_ptr<ir::Graph> graph);
  std::unique_ptr<ir::Graph> graph_;
  std::vector<TensorDesc> inputs_;
  std::vector<TensorDesc> outputs_;
};

}  // namespace kiln
