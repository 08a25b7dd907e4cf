// `kiln inspect`: what a model is made of — inputs/outputs, operators,
// parameters, FLOPs, and which operators kiln cannot run.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "onnx/importer.h"
#include "ops/registry.h"
#include "passes/passes.h"

namespace kiln::cli {
namespace {

using nlohmann::json;

struct InspectOptions {
  std::string model_path;
  bool json = false;
  std::vector<std::string> shapes;
};

struct Unsupported {
  std::string node;
  std::string op_type;
  std::string reason;
};

struct FlopsResult {
  double flops = 0;
  int nodes_without_shapes = 0;  // Nodes whose types stayed unknown: not counted.
  std::vector<std::pair<std::string, std::vector<int64_t>>> input_dims;  // Input order.
  std::string error;  // Set when shape inference failed.
};

// Operators that only move or reinterpret data: no arithmetic to count.
bool IsDataMovement(const std::string& op) {
  static const std::set<std::string> kOps = {
      "Reshape",      "Flatten",      "Squeeze",   "Unsqueeze",       "Transpose",
      "Concat",       "Split",        "Slice",     "Gather",          "GatherElements",
      "GatherND",     "Shape",        "Size",      "Identity",        "Dropout",
      "Expand",       "Tile",         "Pad",       "ConstantOfShape", "Constant",
      "DepthToSpace", "SpaceToDepth", "ScatterND", "ScatterElements", "Scatter",
      "Cast",         "CastLike",     "EyeLike",   "Range",           "NonZero"};
  return kOps.count(op) != 0;
}

std::vector<Unsupported> FindUnsupported(const ir::Graph& graph) {
  std::vector<Unsupported> out;
  for (const auto& node : graph.nodes()) {
    try {
      const OpDef& def = OpRegistry::Global().Lookup(*node);
      if (!def.cpu_kernel)
        out.push_back({node->name, node->op_type,
                       node->Describe() + ": the CPU backend has no kernel for it"});
    } catch (const Error& e) {
      out.push_back({node->name, node->op_type, e.what()});
    }
  }
  return out;
}

json TypeJson(const ir::Value& v) {
  json j;
  j["name"] = v.name;
  j["dtype"] = DTypeName(v.type.dtype);
  if (v.type.has_rank()) {
    json dims = json::array();
    for (const ir::Dim& d : *v.type.shape) {
      if (d.is_known()) {
        dims.push_back(d.value);
      } else {
        dims.push_back(d.symbol.empty() ? "?" : d.symbol);
      }
    }
    j["shape"] = dims;
  } else {
    j["shape"] = nullptr;
  }
  return j;
}

std::string ShapeText(const ir::TensorType& t) {
  return t.has_rank() ? ir::ShapeToString(*t.shape) : std::string("[rank ?]");
}

// FLOPs of one inference on a fresh import whose inputs get the requested
// shapes (dynamic dims default to 1). Constant subgraphs are folded first:
// they cost nothing per inference.
FlopsResult CountFlops(const InspectOptions& options) {
  FlopsResult result;
  std::unique_ptr<ir::Graph> graph = onnx_import::ImportModelFile(options.model_path);
  DimBindings bindings;
  for (const std::string& spec : options.shapes) {
    auto [name, dims] = ParseShapeSpec(spec);
    SetInputDims(*FindGraphInput(*graph, name), dims, bindings);
  }
  try {
    SetDynamicInputDims(*graph, bindings);
    for (const ir::Value* in : graph->inputs())
      result.input_dims.emplace_back(in->name, ir::KnownDims(*in->type.shape));
    passes::InferShapes(*graph);
    passes::FoldConstants(*graph);
  } catch (const Error& e) {
    result.error = e.what();
    return result;
  }
  for (const auto& node : graph->nodes()) {
    std::vector<ir::TensorType> inputs, outputs;
    bool known = true;
    auto add = [&known](std::vector<ir::TensorType>& list, const ir::Value* v) {
      list.push_back(v ? v->type : ir::TensorType{});
      if (v && !(v->type.has_rank() && ir::IsFullyKnown(*v->type.shape))) known = false;
    };
    for (const ir::Value* v : node->inputs) add(inputs, v);
    for (const ir::Value* v : node->outputs) add(outputs, v);
    if (!known) {
      ++result.nodes_without_shapes;
      continue;
    }
    const OpDef* def = OpRegistry::Global().Find(node->op_type);
    if (def && def->flops) {
      result.flops += def->flops(*node, inputs, outputs);
    } else if (!IsDataMovement(node->op_type)) {
      for (const ir::TensorType& t : outputs)
        if (t.has_rank()) result.flops += static_cast<double>(Product(ir::KnownDims(*t.shape)));
    }
  }
  return result;
}

int RunInspect(const InspectOptions& options) {
  // Import without inference first, so a model with unsupported operators
  // still gets a full report.
  std::unique_ptr<ir::Graph> graph = onnx_import::ImportModelFile(options.model_path);
  const ModelMetadata meta = ReadModelMetadata(options.model_path);
  // Reject malformed specs and unknown names before any work.
  for (const std::string& spec : options.shapes) FindGraphInput(*graph, ParseShapeSpec(spec).first);

  // Parameters: every constant tensor, counted before any folding.
  int64_t param_count = 0, param_tensors = 0;
  double param_bytes = 0;
  for (const auto& v : graph->values()) {
    if (!v->is_constant()) continue;
    ++param_tensors;
    param_count += v->constant.numel();
    param_bytes += static_cast<double>(v->constant.nbytes());
  }

  std::map<std::string, int> histogram;
  for (const auto& node : graph->nodes()) {
    std::string op = node->domain.empty() || node->domain == "ai.onnx"
                         ? node->op_type
                         : node->domain + "::" + node->op_type;
    ++histogram[op];
  }
  std::vector<std::pair<std::string, int>> ops(histogram.begin(), histogram.end());
  std::stable_sort(ops.begin(), ops.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });

  const std::vector<Unsupported> unsupported = FindUnsupported(*graph);
  std::string inference_error;
  FlopsResult flops;
  if (unsupported.empty()) {
    // Symbolic inference fills in output shapes the model left undeclared.
    try {
      passes::InferShapes(*graph);
    } catch (const Error& e) {
      inference_error = e.what();
    }
    if (inference_error.empty()) {
      flops = CountFlops(options);
      inference_error = flops.error;
    }
  }
  const bool have_flops = unsupported.empty() && inference_error.empty();

  if (options.json) {
    json j;
    j["model"] = options.model_path;
    j["producer"] = {{"name", meta.producer_name}, {"version", meta.producer_version}};
    j["ir_version"] = meta.ir_version;
    j["graph_name"] = graph->name;
    json opsets = json::array();
    for (const auto& [domain, version] : meta.opsets)
      opsets.push_back({{"domain", domain.empty() ? "ai.onnx" : domain}, {"version", version}});
    j["opsets"] = opsets;
    j["inputs"] = json::array();
    for (const ir::Value* v : graph->inputs()) j["inputs"].push_back(TypeJson(*v));
    j["outputs"] = json::array();
    for (const ir::Value* v : graph->outputs()) j["outputs"].push_back(TypeJson(*v));
    j["num_nodes"] = graph->nodes().size();
    j["operators"] = json::array();
    for (const auto& [op, count] : ops)
      j["operators"].push_back({{"op_type", op}, {"count", count}});
    j["parameters"] = {{"count", param_count}, {"bytes", param_bytes}, {"tensors", param_tensors}};
    if (have_flops) {
      j["flops"] = flops.flops;
      json shapes = json::object();
      for (const auto& [name, dims] : flops.input_dims) shapes[name] = dims;
      j["flops_input_shapes"] = shapes;
      j["flops_nodes_without_shapes"] = flops.nodes_without_shapes;
    } else {
      j["flops"] = nullptr;
    }
    j["unsupported"] = json::array();
    for (const Unsupported& u : unsupported)
      j["unsupported"].push_back({{"node", u.node}, {"op_type", u.op_type}, {"reason", u.reason}});
    if (!inference_error.empty()) j["error"] = inference_error;
    std::cout << j.dump(2) << "\n";
  } else {
    std::ostream& out = std::cout;
    out << "model:       " << options.model_path << "\n";
    out << "producer:    " << (meta.producer_name.empty() ? "(unknown)" : meta.producer_name);
    if (!meta.producer_version.empty()) out << " " << meta.producer_version;
    out << " (ONNX IR version " << meta.ir_version << ")\n";
    out << "opset:       ";
    for (size_t i = 0; i < meta.opsets.size(); ++i) {
      const auto& [domain, version] = meta.opsets[i];
      out << (i ? ", " : "") << (domain.empty() ? "ai.onnx" : domain) << " " << version;
    }
    out << "\n";
    if (!graph->name.empty()) out << "graph:       " << graph->name << "\n";
    size_t width = 4;
    for (const ir::Value* v : graph->inputs()) width = std::max(width, v->name.size());
    for (const ir::Value* v : graph->outputs()) width = std::max(width, v->name.size());
    auto print_values = [&](const char* title, const std::vector<ir::Value*>& values) {
      out << title << "\n";
      for (const ir::Value* v : values)
        out << "  " << std::left << std::setw(static_cast<int>(width)) << v->name << "  "
            << std::setw(8) << DTypeName(v->type.dtype) << " " << ShapeText(v->type) << "\n";
    };
    print_values("inputs:", graph->inputs());
    print_values("outputs:", graph->outputs());
    out << "operators:   " << graph->nodes().size() << " nodes, " << ops.size() << " types\n";
    size_t op_width = 4;
    for (const auto& [op, count] : ops) op_width = std::max(op_width, op.size());
    for (const auto& [op, count] : ops)
      out << "  " << std::left << std::setw(static_cast<int>(op_width)) << op << "  " << std::right
          << std::setw(6) << count << "\n";
    out << std::left;
    out << "parameters:  " << HumanCount(static_cast<double>(param_count)) << " (" << param_count
        << " values, " << HumanBytes(param_bytes) << " in " << param_tensors << " tensors)\n";
    if (have_flops) {
      out << "FLOPs:       " << HumanCount(flops.flops) << " per inference (";
      bool first = true;
      for (const auto& [name, dims] : flops.input_dims) {
        out << (first ? "" : ", ") << name << "=" << DimsToString(dims);
        first = false;
      }
      out << ")";
      if (flops.nodes_without_shapes)
        out << "; " << flops.nodes_without_shapes << " nodes with unknown shapes not counted";
      out << "\n";
    }
    if (!unsupported.empty()) {
      out << "unsupported: " << unsupported.size() << " nodes\n";
      for (const Unsupported& u : unsupported) out << "  " << u.reason << "\n";
    }
  }
  if (!unsupported.empty()) {
    std::cerr << "kiln: error: the model has " << unsupported.size()
              << " node(s) kiln cannot run (first: " << unsupported.front().reason << ")\n";
    return 2;
  }
  if (!inference_error.empty()) {
    std::cerr << "kiln: error: shape inference failed: " << inference_error << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

void AddInspectCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Show a model's inputs, outputs, operators, parameters and FLOPs");
  cmd->add_option("model", options->model_path, "ONNX model file")->required();
  cmd->add_flag("--json", options->json, "Print the report as JSON");
  cmd->add_option("--shapes", options->shapes,
                  "Input shapes for FLOP counting, e.g. input=1x3x224x224 (dynamic dims "
                  "default to 1)");
  cmd->callback([options, &exit_code] { exit_code = RunInspect(*options); });
}

}  // namespace kiln::cli
