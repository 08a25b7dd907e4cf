"""The real tritonclient.http against a running `kiln serve` (loopback).

scripts/serve-test starts the server on the repository that
tests/serve/make_repository.py writes and sets:
  KILN_SERVE_HTTP_URL     host:port of the HTTP endpoint
  KILN_SERVE_METRICS_URL  host:port of the metrics endpoint
  KILN_SERVE_REFERENCE    folder with W.npy / B.npy of the "dense" model
Run alone: python -m unittest tests/serve/test_http_client.py (with those set).
"""
import json
import os
import sys
import unittest
import urllib.error
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from serve_common import random_x, reference, run_module

URL = os.environ.get("KILN_SERVE_HTTP_URL", "127.0.0.1:8000")
METRICS_URL = os.environ.get("KILN_SERVE_METRICS_URL", "127.0.0.1:8002")
TIMEOUT_S = 30.0




def dense_inputs(x, binary):
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return [inp]


def raw(method, path, body=None, headers=None):
    """A plain HTTP request: (status, body bytes, headers)."""
    req = urllib.request.Request("http://" + URL + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


class HttpClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = httpclient.InferenceServerClient(
            URL, concurrency=16, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def assert_alive(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())

    # ---- health and metadata ----

    def test_health(self):
        self.assert_alive()
        self.assertTrue(self.client.is_model_ready("dense"))
        self.assertFalse(self.client.is_model_ready("no_such_model"))

    def test_server_metadata(self):
        md = self.client.get_server_metadata()
        self.assertEqual(md["name"], "kiln")
        self.assertIn("version", md)
        self.assertIsInstance(md["extensions"], list)

    def test_model_metadata(self):
        md = self.client.get_model_metadata("dense")
        self.assertEqual(md["name"], "dense")
        self.assertTrue(md["platform"])
        inputs = {t["name"]: t for t in md["inputs"]}
        outputs = {t["name"]: t for t in md["outputs"]}
        self.assertEqual(inputs["X"]["datatype"], "FP32")
        self.assertEqual(inputs["X"]["shape"], [-1, 16])
        self.assertEqual(outputs["Y"]["shape"], [-1, 8])
        self.assertEqual(outputs["Z"]["shape"], [-1, 16])
        md = self.client.get_model_metadata("add_int")
        self.assertEqual(md["inputs"][0]["shape"], [2, 3])
        self.assertEqual(md["inputs"][0]["datatype"], "INT64")

    def test_model_config(self):
        cfg = self.client.get_model_config("dense")
        self.assertEqual(cfg["name"], "dense")
        self.assertEqual(cfg["max_batch_size"], 8)
        self.assertEqual(cfg["input"][0]["name"], "X")
        self.assertEqual(cfg["input"][0]["data_type"], "TYPE_FP32")
        self.assertEqual(cfg["input"][0]["dims"], [16])
        self.assertIn("dynamic_batching", cfg)
        self.assertEqual(cfg["dynamic_batching"]["preferred_batch_size"], [4, 8])

    # ---- inference ----

    def check_dense(self, result, x, outputs=("Y", "Z")):
        y_ref, z_ref = reference(x)
        if "Y" in outputs:
            np.testing.assert_allclose(result.as_numpy("Y"), y_ref, rtol=1e-5, atol=1e-5)
        if "Z" in outputs:
            np.testing.assert_allclose(result.as_numpy("Z"), z_ref, rtol=1e-6, atol=1e-6)

    def test_infer_json(self):
        x = random_x(3, 1)
        outputs = [httpclient.InferRequestedOutput("Y", binary_data=False),
                   httpclient.InferRequestedOutput("Z", binary_data=False)]
        r = self.client.infer("dense", dense_inputs(x, binary=False), outputs=outputs,
                              request_id="req-7")
        self.check_dense(r, x)
        self.assertEqual(r.get_response()["id"], "req-7")
        self.assertEqual(r.get_response()["model_name"], "dense")
        # JSON outputs carry "data", not binary sizes.
        self.assertIn("data", r.get_output("Y"))

    def test_infer_binary(self):
        x = random_x(5, 2)
        outputs = [httpclient.InferRequestedOutput("Y", binary_data=True),
                   httpclient.InferRequestedOutput("Z", binary_data=True)]
        r = self.client.infer("dense", dense_inputs(x, binary=True), outputs=outputs)
        self.check_dense(r, x)
        self.assertEqual(r.get_output("Y")["parameters"]["binary_data_size"], 5 * 8 * 4)

    def test_infer_mixed_and_subset(self):
        x = random_x(2, 3)
        # Binary input, one JSON output, the other not requested.
        r = self.client.infer("dense", dense_inputs(x, binary=True),
                              outputs=[httpclient.InferRequestedOutput("Z", binary_data=False)])
        self.check_dense(r, x, outputs=("Z",))
        self.assertIsNone(r.as_numpy("Y"))
        # No outputs listed: all of them, in binary (tritonclient's default).
        r = self.client.infer("dense", dense_inputs(x, binary=False))
        self.check_dense(r, x)

    def test_infer_explicit_version(self):
        x = random_x(1, 4)
        r = self.client.infer("dense", dense_inputs(x, binary=True), model_version="1")
        self.check_dense(r, x)

    def test_infer_int64_no_batching(self):
        a = np.arange(6, dtype=np.int64).reshape(2, 3)
        b = np.full((2, 3), 10, dtype=np.int64)
        for binary in (False, True):
            ia = httpclient.InferInput("A", [2, 3], "INT64")
            ia.set_data_from_numpy(a, binary_data=binary)
            ib = httpclient.InferInput("B", [2, 3], "INT64")
            ib.set_data_from_numpy(b, binary_data=binary)
            r = self.client.infer("add_int", [ia, ib], outputs=[
                httpclient.InferRequestedOutput("S", binary_data=binary)])
            np.testing.assert_array_equal(r.as_numpy("S"), a + b)

    def test_concurrent_async_infer_batches(self):
        before = self.client.get_inference_statistics("dense")["model_stats"][0]
        xs = [random_x(1, 100 + i) for i in range(32)]
        handles = [self.client.async_infer("dense", dense_inputs(x, binary=True)) for x in xs]
        for x, h in zip(xs, handles):
            self.check_dense(h.get_result(timeout=TIMEOUT_S), x)
        after = self.client.get_inference_statistics("dense")["model_stats"][0]
        inferences = int(after["inference_count"]) - int(before["inference_count"])
        executions = int(after["execution_count"]) - int(before["execution_count"])
        self.assertEqual(inferences, 32)
        # Dynamic batching merged at least some of the 32 concurrent requests.
        self.assertLess(executions, 32, f"{executions} executions for 32 requests")
        sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
        self.assertTrue(any(s > 1 for s in sizes), f"batch sizes seen: {sorted(sizes)}")

    # ---- errors: the client gets InferenceServerException, the server keeps serving ----

    def assert_error(self, fn, *fragments):
        with self.assertRaises(InferenceServerException) as cm:
            fn()
        message = str(cm.exception)
        for f in fragments:
            self.assertIn(f.lower(), message.lower())
        self.assert_alive()
        return message

    def test_unknown_model(self):
        x = random_x(1, 5)
        self.assert_error(lambda: self.client.infer("no_such_model", dense_inputs(x, True)),
                          "no_such_model")
        self.assert_error(lambda: self.client.get_model_metadata("no_such_model"),
                          "no_such_model")
        self.assert_error(lambda: self.client.get_model_config("no_such_model"), "no_such_model")

    def test_wrong_shape(self):
        x = np.zeros((2, 15), dtype=np.float32)
        self.assert_error(lambda: self.client.infer("dense", dense_inputs(x, True)))
        self.assert_error(lambda: self.client.infer("dense", dense_inputs(x, False)))
        too_big = random_x(9, 6)  # max_batch_size is 8
        self.assert_error(lambda: self.client.infer("dense", dense_inputs(too_big, True)))

    def test_wrong_dtype(self):
        inp = httpclient.InferInput("X", [1, 16], "INT32")
        inp.set_data_from_numpy(np.zeros((1, 16), dtype=np.int32), binary_data=True)
        self.assert_error(lambda: self.client.infer("dense", [inp]))

    def test_wrong_input_name(self):
        inp = httpclient.InferInput("NOPE", [1, 16], "FP32")
        inp.set_data_from_numpy(random_x(1, 7), binary_data=False)
        self.assert_error(lambda: self.client.infer("dense", [inp]), "NOPE")

    def test_malformed_requests(self):
        path = "/v2/models/dense/infer"
        binary_without_bytes = (b'{"inputs": [{"name": "X", "shape": [1, 16], "datatype": "FP32", '
                                b'"parameters": {"binary_data_size": 64}}]}')
        cases = [
            (b"{not json", {}),
            (b"[]", {}),
            (b'{"inputs": []}', {}),
            (b'{"inputs": [{"name": "X", "shape": [1, 16], "datatype": "FP32", "data": [1, 2]}]}',
             {}),
            (binary_without_bytes, {"Inference-Header-Content-Length": str(len(binary_without_bytes))}),
            (b'{}', {"Inference-Header-Content-Length": "9999"}),
            (b'{}', {"Inference-Header-Content-Length": "abc"}),
        ]
        for body, headers in cases:
            status, data, _ = raw("POST", path, body, headers)
            self.assertEqual(status, 400, (body, data))
            self.assertIn("error", json.loads(data), body)
        status, data, _ = raw("GET", "/v2/no/such/endpoint")
        self.assertEqual(status, 404)
        self.assertIn("error", json.loads(data))
        self.assert_alive()

    def test_oversized_payload(self):
        # The server's limit (ServerOptions::max_request_bytes) is 64 MiB by default.
        big = b"0" * (65 << 20)
        status, data, _ = raw("POST", "/v2/models/dense/infer", big,
                              {"Content-Type": "application/json"})
        self.assertIn(status, (400, 413))
        self.assertIn("exceeds", json.loads(data)["error"])
        self.assert_alive()

    # ---- statistics, repository, metrics ----

    def test_statistics(self):
        x = random_x(2, 8)
        self.client.infer("dense", dense_inputs(x, True))
        stats = self.client.get_inference_statistics("dense")["model_stats"]
        self.assertEqual(len(stats), 1)
        s = stats[0]
        self.assertEqual(s["name"], "dense")
        self.assertGreaterEqual(int(s["inference_count"]), 2)
        self.assertGreaterEqual(int(s["execution_count"]), 1)
        self.assertGreater(int(s["last_inference"]), 0)
        success = s["inference_stats"]["success"]
        self.assertGreaterEqual(int(success["count"]), 1)
        for key in ("fail", "queue", "compute_input", "compute_infer", "compute_output"):
            self.assertIn(key, s["inference_stats"])
        all_stats = self.client.get_inference_statistics()["model_stats"]
        self.assertIn("dense", {m["name"] for m in all_stats})

    def test_repository_load_unload(self):
        index = {m["name"]: m for m in self.client.get_model_repository_index()}
        self.assertEqual(index["dense"]["state"], "READY")
        self.assertIn("dense_spare", index)
        x = random_x(1, 9)
        self.client.unload_model("dense_spare")
        self.assertFalse(self.client.is_model_ready("dense_spare"))
        self.assert_error(lambda: self.client.infer("dense_spare", dense_inputs(x, True)))
        index = {m["name"]: m for m in self.client.get_model_repository_index()}
        self.assertNotEqual(index["dense_spare"].get("state"), "READY")
        self.client.load_model("dense_spare")
        self.assertTrue(self.client.is_model_ready("dense_spare"))
        self.check_dense(self.client.infer("dense_spare", dense_inputs(x, True)), x)
        self.assert_error(lambda: self.client.load_model("no_such_model"), "no_such_model")

    def test_metrics(self):
        self.client.infer("dense", dense_inputs(random_x(1, 10), True))
        with urllib.request.urlopen(f"http://{METRICS_URL}/metrics", timeout=TIMEOUT_S) as r:
            self.assertEqual(r.status, 200)
            self.assertIn("text/plain", r.headers.get("Content-Type"))
            text = r.read().decode()
        self.assertIn("nv_inference_request_success", text)
        self.assertIn('model="dense"', text)


def main():
    return run_module(__name__)


if __name__ == "__main__":
    sys.exit(main())
