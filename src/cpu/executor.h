// The CPU reference backend: runs an ir::Graph node by node on the host.
//
// It is kiln's correctness oracle (the GPU backend is tested against it), so
// it favours clarity over speed; heavy math (GEMM, convolution) goes through
// BLAS. Each node's outputs are allocated from run-time shape inference, and a
// tensor is released after its last consumer has run.
#pragma once

#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/graph.h"

namespace kiln::cpu {

// Runs one node on concrete inputs (nullptr for omitted optional inputs) and
// returns its outputs (undefined tensors for omitted optional outputs).
// Errors name the node.
std::vector<Tensor> EvaluateNode(const ir::Node& node, const std::vector<const Tensor*>& inputs);

class Executor {
 public:
  // `graph` must outlive the executor and stay unchanged.
  explicit Executor(const ir::Graph& graph);

  // `inputs` maps graph input names to tensors. Returns the graph outputs in
  // order. Throws kiln::Error for a missing, extra or mistyped input.
  std::vector<Tensor> Run(const std::map<std::string, Tensor>& inputs) const;

 private:
  void CheckInput(const ir::Value& declared, const Tensor& given) const;

  const ir::Graph& graph_;
  // For each node index, the values whose last use is that node.
  std::vector<std::vector<const ir::Value*>> release_after_;
};

}  // namespace kiln::cpu
