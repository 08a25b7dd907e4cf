#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "cpu/executor.h"

namespace kiln::testing {

std::vector<Tensor> RunNode(const std::string& op_type, const std::vector<Tensor>& inputs,
                            const ir::Attributes& attrs, int num_outputs, int opset,
                            const std::vector<bool>& constant_inputs) {
  ir::Graph graph;
  graph.opset_version = opset;
  std::vector<ir::Value*> node_inputs;
  std::map<std::string, Tensor> feeds;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) {
      node_inputs.push_back(nullptr);
      continue;
    }
    std::string name = "in" + std::to_string(i);
    bool constant = i < constant_inputs.size() && constant_inputs[i];
    if (constant) {
      node_inputs.push_back(graph.AddConstant(name, inputs[i]));
    } else {
      ir::Value* v = graph.AddValue(name, ir::TensorType::Of(inputs[i]));
      v->is_graph_input = true;
      graph.inputs().push_back(v);
      feeds[name] = inputs[i];
      node_inputs.push_back(v);
    }
  }
  std::vector<ir::Value*> node_outputs;
  for (int i = 0; i < num_outputs; ++i) node_outputs.push_back(graph.AddValue("out" + std::to_string(i)));
  ir::Node* node = graph.AddNode(op_type, "test_" + op_type, node_inputs, node_outputs);
  node->attrs = attrs;
  graph.outputs() = node_outputs;
  cpu::Executor executor(graph);
  return executor.Run(feeds);
}

Tensor NchwToNhwc(const Tensor& t) {
  ir::Attributes attrs;
  attrs.set("perm", std::vector<int64_t>{0, 2, 3, 1});
  return RunNode("Transpose", {t}, attrs)[0];
}

Tensor NhwcToNchw(const Tensor& t) {
  ir::Attributes attrs;
  attrs.set("perm", std::vector<int64_t>{0, 3, 1, 2});
  return RunNode("Transpose", {t}, attrs)[0];
}

Tensor RandomTensor(std::vector<int64_t> dims, float lo, float hi, uint32_t seed) {
  Tensor t(DType::kFloat32, std::move(dims));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

double MaxAbsoluteError(const Tensor& actual, const Tensor& expected) {
  if (actual.dims() != expected.dims()) return INFINITY;
  double worst = 0;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    double d = std::fabs(actual.GetAsDouble(i) - expected.GetAsDouble(i));
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d);
  }
  return worst;
}

double MaxRelativeError(const Tensor& actual, const Tensor& expected) {
  double scale = 1e-6;
  for (int64_t i = 0; i < expected.numel(); ++i)
    scale = std::max(scale, std::fabs(expected.GetAsDouble(i)));
  return MaxAbsoluteError(actual, expected) / scale;
}

}  // namespace kiln::testing
