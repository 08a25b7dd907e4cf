"""The real tritonclient.grpc against a running `kiln serve` (loopback).

scripts/serve-test starts the server on the repository that
tests/serve/make_repository.py writes and sets:
  KILN_SERVE_GRPC_URL     host:port of the gRPC endpoint (KILN_GRPC_URL also accepted)
  KILN_SERVE_REFERENCE    folder with W.npy / B.npy of the "dense" model
Run alone: python -m unittest tests/serve/test_grpc_client.py (with those set).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException
from serve_common import random_x, reference, run_module

URL = os.environ.get("KILN_SERVE_GRPC_URL") or os.environ.get("KILN_GRPC_URL") or "127.0.0.1:8001"
TIMEOUT_S = 30.0
PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "third_party",
                     "kserve", "grpc_service.proto")




def dense_inputs(x):
    inp = grpcclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # tritonclient.grpc sends raw_input_contents
    return [inp]


class ProtoWireCompatibilityTest(unittest.TestCase):
    """kiln's grpc_service.proto against the schema tritonclient 2.51 ships:
    every message kiln declares must use Triton's field numbers, types and
    labels, and every RPC Triton's method names and streaming kinds."""

    def test_fields_match_tritonclient(self):
        protoc = shutil.which("protoc")
        if protoc is None:
            self.skipTest("protoc is not installed")
        from google.protobuf import descriptor_pb2, descriptor_pool
        from tritonclient.grpc import service_pb2
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "mine.pb")
            subprocess.run([protoc, "--proto_path=" + os.path.dirname(PROTO),
                            "--descriptor_set_out=" + out, PROTO], check=True)
            with open(out, "rb") as f:
                files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        pool = descriptor_pool.DescriptorPool()
        for fd in files.file:
            pool.Add(fd)
        mine = pool.FindFileByName("grpc_service.proto")
        theirs = service_pb2.DESCRIPTOR.pool
        problems = []

        def check_enum(e):
            te = theirs.FindEnumTypeByName(e.full_name)
            for v in e.values:
                if v.name not in te.values_by_name or te.values_by_name[v.name].number != v.number:
                    problems.append(f"enum value {e.full_name}.{v.name}")

        def check_message(m):
            t = theirs.FindMessageTypeByName(m.full_name)
            for f in m.fields:
                tf = t.fields_by_number.get(f.number)
                same = (tf is not None and tf.name == f.name and tf.type == f.type
                        and tf.label == f.label
                        and (f.message_type is None
                             or f.message_type.full_name == tf.message_type.full_name)
                        and (f.enum_type is None
                             or f.enum_type.full_name == tf.enum_type.full_name))
                if not same:
                    problems.append(f"field {m.full_name}.{f.name} = {f.number}")
            for n in m.nested_types:
                check_message(n)
            for e in m.enum_types:
                check_enum(e)

        for m in mine.message_types_by_name.values():
            check_message(m)
        for e in mine.enum_types_by_name.values():
            check_enum(e)
        self.assertIn("GRPCInferenceService", mine.services_by_name)
        service = theirs.FindServiceByName("inference.GRPCInferenceService")
        for method in mine.services_by_name["GRPCInferenceService"].methods:
            tm = service.methods_by_name.get(method.name)
            if (tm is None or tm.input_type.full_name != method.input_type.full_name
                    or tm.output_type.full_name != method.output_type.full_name
                    or tm.client_streaming != method.client_streaming
                    or tm.server_streaming != method.server_streaming):
                problems.append(f"rpc {method.name}")
        self.assertEqual(problems, [])
        self.assertGreaterEqual(len(mine.message_types_by_name), 30)


class GrpcClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = grpcclient.InferenceServerClient(URL)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def assert_alive(self):
        self.assertTrue(self.client.is_server_live(client_timeout=TIMEOUT_S))
        self.assertTrue(self.client.is_server_ready(client_timeout=TIMEOUT_S))

    def infer(self, model, inputs, **kwargs):
        return self.client.infer(model, inputs, client_timeout=TIMEOUT_S, **kwargs)

    def check_dense(self, result, x, outputs=("Y", "Z")):
        y_ref, z_ref = reference(x)
        if "Y" in outputs:
            np.testing.assert_allclose(result.as_numpy("Y"), y_ref, rtol=1e-5, atol=1e-5)
        if "Z" in outputs:
            np.testing.assert_allclose(result.as_numpy("Z"), z_ref, rtol=1e-6, atol=1e-6)

    # ---- health and metadata ----

    def test_health(self):
        self.assert_alive()
        self.assertTrue(self.client.is_model_ready("dense"))
        self.assertFalse(self.client.is_model_ready("no_such_model"))

    def test_server_metadata(self):
        md = self.client.get_server_metadata(as_json=True)
        self.assertEqual(md["name"], "kiln")
        self.assertTrue(md["version"])
        md = self.client.get_server_metadata()  # the protobuf message
        self.assertEqual(md.name, "kiln")

    def test_model_metadata(self):
        md = self.client.get_model_metadata("dense")
        self.assertEqual(md.name, "dense")
        self.assertTrue(md.platform)
        self.assertIn("1", list(md.versions))
        inputs = {t.name: t for t in md.inputs}
        outputs = {t.name: t for t in md.outputs}
        self.assertEqual(inputs["X"].datatype, "FP32")
        self.assertEqual(list(inputs["X"].shape), [-1, 16])
        self.assertEqual(list(outputs["Y"].shape), [-1, 8])
        self.assertEqual(list(outputs["Z"].shape), [-1, 16])
        md = self.client.get_model_metadata("add_int", as_json=True)
        self.assertEqual([int(d) for d in md["inputs"][0]["shape"]], [2, 3])
        self.assertEqual(md["inputs"][0]["datatype"], "INT64")

    def test_model_config(self):
        cfg = self.client.get_model_config("dense").config
        self.assertEqual(cfg.name, "dense")
        self.assertEqual(cfg.max_batch_size, 8)
        self.assertEqual(cfg.input[0].name, "X")
        self.assertEqual(cfg.input[0].data_type, model_config_pb2.TYPE_FP32)
        self.assertEqual(list(cfg.input[0].dims), [16])
        self.assertEqual([o.name for o in cfg.output], ["Y", "Z"])
        self.assertTrue(cfg.HasField("dynamic_batching"))
        self.assertEqual(list(cfg.dynamic_batching.preferred_batch_size), [4, 8])
        self.assertEqual(cfg.instance_group[0].count, 1)
        self.assertEqual(cfg.instance_group[0].kind,
                         model_config_pb2.ModelInstanceGroup.KIND_CPU)
        js = self.client.get_model_config("dense", as_json=True)["config"]
        self.assertEqual(js["input"][0]["data_type"], "TYPE_FP32")
        self.assertEqual(js["max_batch_size"], 8)

    # ---- inference ----

    def test_infer(self):
        x = random_x(3, 1)
        r = self.infer("dense", dense_inputs(x), request_id="req-7")
        self.check_dense(r, x)
        response = r.get_response()
        self.assertEqual(response.id, "req-7")
        self.assertEqual(response.model_name, "dense")
        self.assertEqual(r.get_output("Y").datatype, "FP32")
        self.assertEqual(list(r.get_output("Y").shape), [3, 8])

    def test_infer_subset_and_version(self):
        x = random_x(2, 3)
        r = self.infer("dense", dense_inputs(x), outputs=[grpcclient.InferRequestedOutput("Z")],
                       model_version="1")
        self.check_dense(r, x, outputs=("Z",))
        self.assertIsNone(r.as_numpy("Y"))

    def test_infer_int64_no_batching(self):
        a = np.arange(6, dtype=np.int64).reshape(2, 3)
        b = np.full((2, 3), 10, dtype=np.int64)
        ia = grpcclient.InferInput("A", [2, 3], "INT64")
        ia.set_data_from_numpy(a)
        ib = grpcclient.InferInput("B", [2, 3], "INT64")
        ib.set_data_from_numpy(b)
        r = self.infer("add_int", [ia, ib])
        np.testing.assert_array_equal(r.as_numpy("S"), a + b)
        self.assertEqual(r.as_numpy("S").dtype, np.int64)

    def test_concurrent_async_infer(self):
        before = self.client.get_inference_statistics("dense").model_stats[0]
        xs = [random_x(1, 100 + i) for i in range(32)]
        results = [None] * len(xs)
        done = threading.Semaphore(0)

        def callback(i):
            def cb(result, error):
                results[i] = error if error is not None else result
                done.release()
            return cb

        for i, x in enumerate(xs):
            self.client.async_infer("dense", dense_inputs(x), callback(i),
                                    client_timeout=TIMEOUT_S)
        for _ in xs:
            self.assertTrue(done.acquire(timeout=TIMEOUT_S), "an async_infer never completed")
        for x, r in zip(xs, results):
            self.assertNotIsInstance(r, Exception, str(r))
            self.check_dense(r, x)
        after = self.client.get_inference_statistics("dense").model_stats[0]
        self.assertEqual(after.inference_count - before.inference_count, 32)
        # Dynamic batching merged at least some of the 32 concurrent requests.
        executions = after.execution_count - before.execution_count
        self.assertLess(executions, 32, f"{executions} executions for 32 requests")
        sizes = {b.batch_size for b in after.batch_stats}
        self.assertTrue(any(s > 1 for s in sizes), f"batch sizes seen: {sorted(sizes)}")

    def test_stream_infer(self):
        results, lock, done = {}, threading.Lock(), threading.Semaphore(0)

        def callback(result, error):
            with lock:
                if error is not None:
                    results[f"error-{len(results)}"] = error
                else:
                    results[result.get_response().id] = result
            done.release()

        xs = {str(i): random_x(1, 300 + i) for i in range(8)}
        self.client.start_stream(callback)
        try:
            for rid, x in xs.items():
                self.client.async_stream_infer("dense", dense_inputs(x), request_id=rid)
            self.client.async_stream_infer("no_such_model", dense_inputs(xs["0"]),
                                           request_id="bad")
            for _ in range(len(xs) + 1):
                self.assertTrue(done.acquire(timeout=TIMEOUT_S), "a stream response never came")
        finally:
            self.client.stop_stream()
        errors = [v for k, v in results.items() if k.startswith("error-")]
        self.assertEqual(len(errors), 1)
        self.assertIn("no_such_model", str(errors[0]))
        for rid, x in xs.items():
            self.check_dense(results[rid], x)
        self.assert_alive()

    # ---- errors: the client gets InferenceServerException, the server keeps serving ----

    def assert_error(self, fn, *fragments, status=None):
        with self.assertRaises(InferenceServerException) as cm:
            fn()
        message = str(cm.exception)
        for f in fragments:
            self.assertIn(f.lower(), message.lower())
        if status is not None:
            self.assertEqual(cm.exception.status(), status, message)
        self.assert_alive()
        return message

    def test_unknown_model(self):
        x = random_x(1, 5)
        self.assert_error(lambda: self.infer("no_such_model", dense_inputs(x)),
                          "no_such_model", status="StatusCode.NOT_FOUND")
        self.assert_error(lambda: self.client.get_model_metadata("no_such_model"),
                          "no_such_model", status="StatusCode.NOT_FOUND")
        self.assert_error(lambda: self.client.get_model_config("no_such_model"),
                          "no_such_model", status="StatusCode.NOT_FOUND")

    def test_wrong_shape(self):
        x = np.zeros((2, 15), dtype=np.float32)
        self.assert_error(lambda: self.infer("dense", dense_inputs(x)),
                          status="StatusCode.INVALID_ARGUMENT")
        too_big = random_x(9, 6)  # max_batch_size is 8
        self.assert_error(lambda: self.infer("dense", dense_inputs(too_big)),
                          status="StatusCode.INVALID_ARGUMENT")
        # Declared shape and the bytes sent disagree.
        inp = grpcclient.InferInput("X", [2, 16], "FP32")
        inp.set_data_from_numpy(random_x(2, 7))
        inp.set_shape([3, 16])
        self.assert_error(lambda: self.infer("dense", [inp]), "X",
                          status="StatusCode.INVALID_ARGUMENT")

    def test_wrong_dtype(self):
        inp = grpcclient.InferInput("X", [1, 16], "INT32")
        inp.set_data_from_numpy(np.zeros((1, 16), dtype=np.int32))
        self.assert_error(lambda: self.infer("dense", [inp]),
                          status="StatusCode.INVALID_ARGUMENT")
        inp = grpcclient.InferInput("X", [1, 16], "FP64")
        inp.set_data_from_numpy(np.zeros((1, 16), dtype=np.float64))
        self.assert_error(lambda: self.infer("dense", [inp]),
                          status="StatusCode.INVALID_ARGUMENT")

    def test_wrong_input_name(self):
        inp = grpcclient.InferInput("NOPE", [1, 16], "FP32")
        inp.set_data_from_numpy(random_x(1, 7))
        self.assert_error(lambda: self.infer("dense", [inp]), "NOPE",
                          status="StatusCode.INVALID_ARGUMENT")

    def test_oversized_payload(self):
        # Over the server's default limit (ServerOptions::max_request_bytes, 64 MiB).
        x = np.zeros((1, (65 << 20) // 4), dtype=np.float32)
        inp = grpcclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        self.assert_error(lambda: self.infer("dense", [inp]),
                          status="StatusCode.RESOURCE_EXHAUSTED")

    # ---- statistics and repository ----

    def test_statistics(self):
        x = random_x(2, 8)
        self.infer("dense", dense_inputs(x))
        stats = self.client.get_inference_statistics("dense").model_stats
        self.assertEqual(len(stats), 1)
        s = stats[0]
        self.assertEqual(s.name, "dense")
        self.assertGreaterEqual(s.inference_count, 2)
        self.assertGreaterEqual(s.execution_count, 1)
        self.assertGreater(s.last_inference, 0)
        self.assertGreaterEqual(s.inference_stats.success.count, 1)
        self.assertGreater(s.inference_stats.compute_infer.ns, 0)
        js = self.client.get_inference_statistics(as_json=True)
        self.assertIn("dense", {m["name"] for m in js["model_stats"]})
        self.assert_error(lambda: self.client.get_inference_statistics("no_such_model"),
                          "no_such_model", status="StatusCode.NOT_FOUND")

    def test_repository_load_unload(self):
        index = {m.name: m for m in self.client.get_model_repository_index().models}
        self.assertEqual(index["dense"].state, "READY")
        self.assertIn("dense_spare", index)
        x = random_x(1, 9)
        self.client.unload_model("dense_spare")
        try:
            self.assertFalse(self.client.is_model_ready("dense_spare"))
            self.assert_error(lambda: self.infer("dense_spare", dense_inputs(x)))
            index = {m.name: m for m in self.client.get_model_repository_index().models}
            self.assertNotEqual(index["dense_spare"].state, "READY")
        finally:
            self.client.load_model("dense_spare")
        self.assertTrue(self.client.is_model_ready("dense_spare"))
        self.check_dense(self.infer("dense_spare", dense_inputs(x)), x)
        self.assert_error(lambda: self.client.load_model("no_such_model"), "no_such_model")
        self.assert_error(lambda: self.client.load_model("dense", config="{}"), "config",
                          status="StatusCode.INVALID_ARGUMENT")
        js = self.client.get_model_repository_index(as_json=True)
        self.assertIn("dense", {m["name"] for m in js["models"]})


def main():
    return run_module(__name__)


if __name__ == "__main__":
    sys.exit(main())
