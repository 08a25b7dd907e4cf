"""Writes the model repository the serve tests run against (Debian python3-onnx).

    /usr/bin/python3 tests/serve/make_repository.py OUT_DIR

OUT_DIR/models/  the repository passed to `kiln serve --model-repository`:
  dense/         Y = Relu(X @ W + B) [batch, 8] and Z = X * 2 [batch, 16]; X is
                 FP32 [batch, 16]; max_batch_size 8, dynamic batching.
  dense_spare/   the same model under another name (load/unload tests), configured
                 by a Triton-style config.pbtxt instead of config.json.
  add_int/       S = A + B, INT64 [2, 3] each, no batching (max_batch_size 0).
OUT_DIR/reference/W.npy, B.npy  the weights, so tests compute the reference.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def dense_model(W, B):
    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 16])
    Y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 8])
    Z = helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["batch", 16])
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"),
             numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"], name="matmul"),
             helper.make_node("Add", ["XW", "B"], ["XWB"], name="bias"),
             helper.make_node("Relu", ["XWB"], ["Y"], name="relu"),
             helper.make_node("Mul", ["X", "two"], ["Z"], name="double")]
    graph = helper.make_graph(nodes, "dense", [X], [Y, Z], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def add_model():
    A = helper.make_tensor_value_info("A", TensorProto.INT64, [2, 3])
    Bv = helper.make_tensor_value_info("B", TensorProto.INT64, [2, 3])
    S = helper.make_tensor_value_info("S", TensorProto.INT64, [2, 3])
    graph = helper.make_graph([helper.make_node("Add", ["A", "B"], ["S"], name="add")],
                              "add_int", [A, Bv], [S])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write(repo, name, model, config):
    os.makedirs(os.path.join(repo, name, "1"), exist_ok=True)
    onnx.save(model, os.path.join(repo, name, "1", "model.onnx"))
    if config is not None:
        with open(os.path.join(repo, name, "config.json"), "w") as f:
            json.dump(config, f, indent=2)


DENSE_PBTXT = """# Triton's protobuf text format, as Triton's documentation writes it.
name: "dense_spare"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest { num_versions: 1 } }
input [ { name: "X" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [
  { name: "Y" data_type: TYPE_FP32 dims: [ 8 ] },
  { name: "Z" data_type: TYPE_FP32 dims: [ 16 ] }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 20000
}
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def main():
    out = sys.argv[1]
    repo = os.path.join(out, "models")
    ref = os.path.join(out, "reference")
    os.makedirs(ref, exist_ok=True)
    rng = np.random.default_rng(6)
    W = rng.uniform(-1, 1, (16, 8)).astype(np.float32)
    B = rng.uniform(-0.5, 0.5, (8,)).astype(np.float32)
    np.save(os.path.join(ref, "W.npy"), W)
    np.save(os.path.join(ref, "B.npy"), B)

    def dense_config(name):
        return {
            "name": name,
            "max_batch_size": 8,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [16]}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [8]},
                       {"name": "Z", "data_type": "TYPE_FP32", "dims": [16]}],
            "dynamic_batching": {"preferred_batch_size": [4, 8],
                                 "max_queue_delay_microseconds": 20000},
            "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        }

    write(repo, "dense", dense_model(W, B), dense_config("dense"))
    write(repo, "dense_spare", dense_model(W, B), None)
    with open(os.path.join(repo, "dense_spare", "config.pbtxt"), "w") as f:
        f.write(DENSE_PBTXT)
    write(repo, "add_int", add_model(), {
        "name": "add_int",
        "max_batch_size": 0,
        "input": [{"name": "A", "data_type": "TYPE_INT64", "dims": [2, 3]},
                  {"name": "B", "data_type": "TYPE_INT64", "dims": [2, 3]}],
        "output": [{"name": "S", "data_type": "TYPE_INT64", "dims": [2, 3]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    })


if __name__ == "__main__":
    main()
