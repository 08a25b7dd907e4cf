// A small image model for the pipeline tests, written with the ONNX protobuf
// API: x float32[batch, 3, 4, 4] -> Conv(4 filters, 3x3, pad 1) -> Relu ->
// Flatten -> Gemm(5) -> y float32[batch, 5]. Deterministic random weights.
#pragma once

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kiln/error.h"
#include "onnx.pb.h"

namespace kiln::testing {

inline void WritePipelineTestModel(const std::string& path, int64_t batch) {
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("pipeline_test");
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("pipeline_test");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  auto add_initializer = [&](const char* name, std::vector<int64_t> dims) {
    ::onnx::TensorProto* t = graph->add_initializer();
    t->set_name(name);
    t->set_data_type(::onnx::TensorProto::FLOAT);
    int64_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= d;
    }
    for (int64_t i = 0; i < n; ++i) t->add_float_data(uniform(rng));
  };
  add_initializer("conv_w", {4, 3, 3, 3});
  add_initializer("conv_b", {4});
  add_initializer("fc_w", {5, 64});
  add_initializer("fc_b", {5});
  auto add_node = [&](const char* op, std::vector<const char*> inputs, const char* output) {
    ::onnx::NodeProto* node = graph->add_node();
    node->set_op_type(op);
    node->set_name(std::string(op) + "_node");
    for (const char* in : inputs) node->add_input(in);
    node->add_output(output);
    return node;
  };
  ::onnx::NodeProto* conv = add_node("Conv", {"x", "conv_w", "conv_b"}, "conv");
  auto* pads = conv->add_attribute();
  pads->set_name("pads");
  pads->set_type(::onnx::AttributeProto::INTS);
  for (int i = 0; i < 4; ++i) pads->add_ints(1);
  add_node("Relu", {"conv"}, "relu");
  add_node("Flatten", {"relu"}, "flat");
  ::onnx::NodeProto* gemm = add_node("Gemm", {"flat", "fc_w", "fc_b"}, "y");
  auto* trans_b = gemm->add_attribute();
  trans_b->set_name("transB");
  trans_b->set_type(::onnx::AttributeProto::INT);
  trans_b->set_i(1);
  auto declare = [](::onnx::ValueInfoProto* v, const char* name, std::vector<int64_t> dims) {
    v->set_name(name);
    auto* type = v->mutable_type()->mutable_tensor_type();
    type->set_elem_type(::onnx::TensorProto::FLOAT);
    for (int64_t d : dims) {
      auto* dim = type->mutable_shape()->add_dim();
      if (d < 0) {
        dim->set_dim_param("batch");
      } else {
        dim->set_dim_value(d);
      }
    }
  };
  declare(graph->add_input(), "x", {batch, 3, 4, 4});
  declare(graph->add_output(), "y", {batch, 5});
  std::ofstream out(path, std::ios::binary);
  KILN_CHECK(out, "cannot write ", path);
  out << model.SerializeAsString();
  KILN_CHECK(out.good(), "cannot write ", path);
}

}  // namespace kiln::testing
