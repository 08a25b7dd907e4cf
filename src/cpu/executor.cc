#include "cpu/executor.h"

#include <unordered_set>

#include "ops/registry.h"

namespace kiln::cpu {

std::vector<Tensor> EvaluateNode(const ir::Node& node, const std::vector<const Tensor*>& inputs) {
  const OpDef& def = OpRegistry::Global().Lookup(node);
  KILN_CHECK(def.cpu_kernel, node.Describe(), ": the CPU backend has no kernel for ",
             node.op_type);
  std::vector<ir::TensorType> input_types(inputs.size());
  std::vector<const ir::TensorType*> type_ptrs(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i]) continue;
    input_types[i] = ir::TensorType::Of(*inputs[i]);
    type_ptrs[i] = &input_types[i];
  }
  std::vector<ir::TensorType> output_types = InferNode(node, type_ptrs, inputs);
  std::vector<Tensor> outputs(node.outputs.size());
  std::vector<Tensor*> output_ptrs(node.outputs.size(), nullptr);
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    if (!node.outputs[i]) continue;
    const ir::TensorType& t = output_types[i];
    KILN_CHECK(t.dtype != DType::kUndefined && t.has_rank() && ir::IsFullyKnown(*t.shape),
               node.Describe(), ": output ", i, " has no concrete type at run time (",
               t.ToString(), ")");
    outputs[i] = Tensor(t.dtype, ir::KnownDims(*t.shape));
    output_ptrs[i] = &outputs[i];
  }
  KernelContext ctx(node, inputs, output_ptrs);
  try {
    def.cpu_kernel(ctx);
  } catch (const Error& e) {
    Fail(node.Describe(), ": ", e.what());
  }
  return outputs;
}

Executor::Executor(const ir::Graph& graph) : graph_(graph) {
  const auto& nodes = graph.nodes();
  std::unordered_map<const ir::Value*, size_t> last_use;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (const ir::Value* in : nodes[i]->inputs)
      if (in && !in->is_constant()) last_use[in] = i;
  std::unordered_set<const ir::Value*> outputs(graph.outputs().begin(), graph.outputs().end());
  release_after_.resize(nodes.size());
  for (const auto& [value, index] : last_use)
    if (!outputs.count(value)) release_after_[index].push_back(value);
}

void Executor::CheckInput(const ir::Value& declared, const Tensor& given) const {
  KILN_CHECK(given.dtype() == declared.type.dtype, "input '", declared.name, "' expects ",
             DTypeName(declared.type.dtype), ", got ", given.TypeString());
  if (!declared.type.has_rank()) return;
  const ir::Shape& shape = *declared.type.shape;
  KILN_CHECK(static_cast<int>(shape.size()) == given.rank(), "input '", declared.name,
             "' expects shape ", ir::ShapeToString(shape), ", got ", given.TypeString());
  for (size_t i = 0; i < shape.size(); ++i)
    KILN_CHECK(!shape[i].is_known() || shape[i].value == given.dims()[i], "input '",
               declared.name, "' expects shape ", ir::ShapeToString(shape), ", got ",
               given.TypeString(), " (dim ", i, " differs)");
}

std::vector<Tensor> Executor::Run(const std::map<std::string, Tensor>& inputs) const {
  std::unordered_map<const ir::Value*, Tensor> env;
  for (const ir::Value* in : graph_.inputs()) {
    auto it = inputs.find(in->name);
    KILN_CHECK(it != inputs.end(), "missing input '", in->name, "' (",
               in->type.ToString(), ")");
    CheckInput(*in, it->second);
    env[in] = it->second;
  }
  for (const auto& [name, tensor] : inputs) {
    bool known = false;
    for (const ir::Value* in : graph_.inputs()) known |= in->name == name;
    KILN_CHECK(known, "the model has no input named '", name, "'");
  }

  const auto& nodes = graph_.nodes();
  for (size_t n = 0; n < nodes.size(); ++n) {
    const ir::Node& node = *nodes[n];
    std::vector<const Tensor*> args(node.inputs.size(), nullptr);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const ir::Value* v = node.inputs[i];
      if (!v) continue;
      if (v->is_constant()) {
        args[i] = &v->constant;
        continue;
      }
      auto it = env.find(v);
      KILN_CHECK(it != env.end(), node.Describe(), ": input '", v->name, "' was not computed");
      args[i] = &it->second;
    }
    std::vector<Tensor> results = EvaluateNode(node, args);
    for (size_t i = 0; i < node.outputs.size(); ++i)
      if (node.outputs[i]) env[node.outputs[i]] = std::move(results[i]);
    for (const ir::Value* v : release_after_[n]) env.erase(v);
  }

  std::vector<Tensor> outputs;
  for (const ir::Value* out : graph_.outputs()) {
    if (out->is_constant()) {
      outputs.push_back(out->constant);
      continue;
    }
    auto it = env.find(out);
    KILN_CHECK(it != env.end(), "graph output '", out->name, "' was not computed");
    outputs.push_back(it->second);
  }
  return outputs;
}

}  // namespace kiln::cpu
