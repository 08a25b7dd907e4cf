"""Soak test: bounded mixed traffic against a running `kiln serve` (loopback).

For KILN_SOAK_SECONDS (default 30) several threads send at once:
  - good requests through tritonclient.http (JSON and binary tensors) and
    tritonclient.grpc, random batch sizes, each answer checked against the
    numpy reference of the "dense" model (and "add_int");
  - bad requests: malformed JSON, wrong shapes, dtypes and input names, a
    batch over max_batch_size, broken binary framing, an unknown model, a
    payload over the 64 MiB limit; each must get the protocol's error
    (HTTP 400/404/413, gRPC INVALID_ARGUMENT/NOT_FOUND);
  - clients that disconnect mid-request (half a body, half the headers, a
    full request whose reply is never read, gRPC calls cancelled by a 1 ms
    deadline).
Meanwhile the server must stay live, and its resident memory (VmRSS of
KILN_SERVE_PID from /proc, sampled once a second) must stay flat: the median
of the last three samples may exceed the median of the three samples after
the warm-up (a quarter of the run, at most 8 s) by at most
RSS_GROWTH_LIMIT_MIB (20 MiB). Finally the server's statistics must count at
least the good requests sent, with non-zero durations.

scripts/serve-test sets KILN_SERVE_HTTP_URL, KILN_SERVE_GRPC_URL,
KILN_SERVE_REFERENCE and KILN_SERVE_PID.
"""
import json
import os
import socket
import statistics
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from serve_common import run_module

HTTP_URL = os.environ.get("KILN_SERVE_HTTP_URL", "127.0.0.1:8000")
GRPC_URL = os.environ.get("KILN_SERVE_GRPC_URL", "127.0.0.1:8001")
REFERENCE = os.environ.get("KILN_SERVE_REFERENCE", "")
SERVER_PID = os.environ.get("KILN_SERVE_PID", "")
DURATION_S = float(os.environ.get("KILN_SOAK_SECONDS", "30"))
WARMUP_S = min(8.0, DURATION_S / 4)
RSS_GROWTH_LIMIT_MIB = 20
TIMEOUT_S = 30.0
OVERSIZED = 65 << 20  # Over the server's default 64 MiB request limit.


def load_reference():
    return np.load(os.path.join(REFERENCE, "W.npy")), np.load(os.path.join(REFERENCE, "B.npy"))


def rss_bytes():
    with open(f"/proc/{SERVER_PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/%s/status" % SERVER_PID)


def http_post(path, body, headers=None):
    """(status, body bytes) of a plain HTTP POST on a fresh connection."""
    req = urllib.request.Request("http://" + HTTP_URL + path, data=body, method="POST",
                                 headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Tally:
    """Counts per category, and the first failures with their reasons."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []

    def ok(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, what, why):
        with self.lock:
            self.counts["FAILED " + what] = self.counts.get("FAILED " + what, 0) + 1
            if len(self.failures) < 20:
                self.failures.append(f"{what}: {why}")

    def total(self, prefix):
        with self.lock:
            return sum(n for k, n in self.counts.items() if k.startswith(prefix))


class SoakTest(unittest.TestCase):
    def setUp(self):
        self.W, self.B = load_reference()
        self.tally = Tally()
        self.deadline = time.monotonic() + DURATION_S
        self.warmup_end = time.monotonic() + WARMUP_S

    def running(self):
        return time.monotonic() < self.deadline

    def check_dense(self, what, x, y, z):
        ref_y = np.maximum(x @ self.W + self.B, 0)
        if y is None or z is None or y.shape != ref_y.shape or z.shape != x.shape:
            return self.tally.fail(what, "missing or misshapen outputs")
        if not np.allclose(y, ref_y, rtol=1e-4, atol=1e-5):
            return self.tally.fail(what, "Y differs from the numpy reference by %g"
                                   % float(np.max(np.abs(y - ref_y))))
        if not np.array_equal(z, x * 2):
            return self.tally.fail(what, "Z differs from 2 * X")
        self.tally.ok(what)

    # ---- good traffic ----

    def good_http(self, binary, seed):
        what = "good http " + ("binary" if binary else "json")
        rng = np.random.default_rng(seed)
        client = httpclient.InferenceServerClient(HTTP_URL, connection_timeout=TIMEOUT_S,
                                                  network_timeout=TIMEOUT_S)
        try:
            while self.running():
                if rng.random() < 0.1:
                    a = rng.integers(-100, 100, (2, 3), dtype=np.int64)
                    b = rng.integers(-100, 100, (2, 3), dtype=np.int64)
                    inputs = [httpclient.InferInput("A", [2, 3], "INT64"),
                              httpclient.InferInput("B", [2, 3], "INT64")]
                    inputs[0].set_data_from_numpy(a, binary_data=binary)
                    inputs[1].set_data_from_numpy(b, binary_data=binary)
                    try:
                        s = client.infer("add_int", inputs).as_numpy("S")
                    except InferenceServerException as e:
                        self.tally.fail(what + " add_int", str(e))
                        continue
                    if s is not None and np.array_equal(s, a + b):
                        self.tally.ok(what + " add_int")
                    else:
                        self.tally.fail(what + " add_int", "S differs from A + B")
                    continue
                x = rng.uniform(-1, 1, (int(rng.integers(1, 5)), 16)).astype(np.float32)
                inp = httpclient.InferInput("X", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in "YZ"]
                try:
                    r = client.infer("dense", [inp], outputs=outputs)
                except InferenceServerException as e:
                    self.tally.fail(what, str(e))
                    continue
                self.check_dense(what, x, r.as_numpy("Y"), r.as_numpy("Z"))
        finally:
            client.close()

    def good_grpc(self, seed):
        what = "good grpc"
        rng = np.random.default_rng(seed)
        client = grpcclient.InferenceServerClient(GRPC_URL)
        try:
            while self.running():
                x = rng.uniform(-1, 1, (int(rng.integers(1, 5)), 16)).astype(np.float32)
                inp = grpcclient.InferInput("X", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                try:
                    r = client.infer("dense", [inp], client_timeout=TIMEOUT_S)
                except InferenceServerException as e:
                    self.tally.fail(what, str(e))
                    continue
                self.check_dense(what, x, r.as_numpy("Y"), r.as_numpy("Z"))
        finally:
            client.close()

    # ---- bad traffic ----

    def bad_http(self):
        def body(name="X", shape=(1, 16), datatype="FP32", n=16):
            return json.dumps({"inputs": [{"name": name, "shape": list(shape),
                                           "datatype": datatype, "data": [1] * n}]}).encode()
        framing = b'{"inputs": [{"name": "X", "shape": [1, 16], "datatype": "FP32", ' \
                  b'"parameters": {"binary_data_size": 64}}]}'
        cases = [
            ("malformed json", "/v2/models/dense/infer", b"{not json", {}, 400),
            ("wrong shape", "/v2/models/dense/infer", body(shape=(1, 15), n=15), {}, 400),
            ("wrong dtype", "/v2/models/dense/infer", body(datatype="INT32"), {}, 400),
            ("wrong name", "/v2/models/dense/infer", body(name="NOPE"), {}, 400),
            ("batch over max", "/v2/models/dense/infer", body(shape=(9, 16), n=144), {}, 400),
            ("broken framing", "/v2/models/dense/infer", framing,
             {"Inference-Header-Content-Length": str(len(framing))}, 400),
            ("unknown model", "/v2/models/no_such_model/infer", body(), {}, 404),
        ]
        oversized_sent = 0
        i = 0
        while self.running():
            # Three oversized payloads: one in the warm-up, two after it.
            due = 1 if time.monotonic() < self.warmup_end else 3
            if oversized_sent < due:
                oversized_sent += 1
                status, data = http_post("/v2/models/dense/infer", b"0" * OVERSIZED)
                self.expect_http_error("oversized payload", status, data, (400, 413), "exceeds")
                continue
            what, path, payload, extra, code = cases[i % len(cases)]
            i += 1
            headers = {"Content-Type": "application/json", **extra}
            try:
                status, data = http_post(path, payload, headers)
            except OSError as e:
                self.tally.fail("bad http " + what, "no reply: %s" % e)
                continue
            self.expect_http_error(what, status, data, (code,))
            time.sleep(0.005)

    def expect_http_error(self, what, status, data, codes, fragment=None):
        what = "bad http " + what
        try:
            message = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            return self.tally.fail(what, "HTTP %d without a JSON error: %r" % (status, data[:200]))
        if status not in codes:
            return self.tally.fail(what, "HTTP %d (expected %s): %s" % (status, codes, message))
        if fragment and fragment not in message:
            return self.tally.fail(what, "error %r lacks %r" % (message, fragment))
        self.tally.ok(what)

    def bad_grpc(self):
        client = grpcclient.InferenceServerClient(GRPC_URL)

        def tensor(name, shape, dtype):
            inp = grpcclient.InferInput(name, list(shape), {np.float32: "FP32", np.int32: "INT32",
                                                            np.float64: "FP64"}[dtype])
            inp.set_data_from_numpy(np.ones(shape, dtype=dtype))
            return [inp]
        cases = [
            ("wrong shape", "dense", tensor("X", (1, 15), np.float32), "StatusCode.INVALID_ARGUMENT"),
            ("wrong dtype", "dense", tensor("X", (1, 16), np.int32), "StatusCode.INVALID_ARGUMENT"),
            ("wrong dtype fp64", "dense", tensor("X", (1, 16), np.float64),
             "StatusCode.INVALID_ARGUMENT"),
            ("wrong name", "dense", tensor("NOPE", (1, 16), np.float32),
             "StatusCode.INVALID_ARGUMENT"),
            ("batch over max", "dense", tensor("X", (9, 16), np.float32),
             "StatusCode.INVALID_ARGUMENT"),
            ("unknown model", "no_such_model", tensor("X", (1, 16), np.float32),
             "StatusCode.NOT_FOUND"),
        ]
        i = 0
        try:
            while self.running():
                what, model, inputs, code = cases[i % len(cases)]
                i += 1
                what = "bad grpc " + what
                try:
                    client.infer(model, inputs, client_timeout=TIMEOUT_S)
                    self.tally.fail(what, "succeeded")
                except InferenceServerException as e:
                    if e.status() == code:
                        self.tally.ok(what)
                    else:
                        self.tally.fail(what, "%s (expected %s): %s" % (e.status(), code, e))
                time.sleep(0.005)
        finally:
            client.close()

    def disconnects(self, seed):
        rng = np.random.default_rng(seed)
        host, port = HTTP_URL.rsplit(":", 1)
        x = np.ones((1, 16), dtype=np.float32)
        good = json.dumps({"inputs": [{"name": "X", "shape": [1, 16], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        head = ("POST /v2/models/dense/infer HTTP/1.1\r\nHost: %s\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")
        grpc_client = grpcclient.InferenceServerClient(GRPC_URL)
        i = 0
        try:
            while self.running():
                kind = i % 4
                i += 1
                if kind == 3:
                    # A gRPC call cancelled by its 1 ms deadline (or, rarely, answered).
                    inp = grpcclient.InferInput("X", [1, 16], "FP32")
                    inp.set_data_from_numpy(x)
                    try:
                        grpc_client.infer("dense", [inp], client_timeout=0.001)
                    except InferenceServerException as e:
                        if e.status() not in ("StatusCode.DEADLINE_EXCEEDED",
                                              "StatusCode.CANCELLED"):
                            self.tally.fail("disconnect grpc deadline", str(e))
                            continue
                    self.tally.ok("disconnect grpc deadline")
                    continue
                try:
                    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as s:
                        if kind == 0:  # Half the body, then gone.
                            s.sendall((head % (host, 100000)).encode() + b'{"inputs": [')
                        elif kind == 1:  # Half the headers, then gone.
                            s.sendall(b"POST /v2/models/dense/infer HTTP/1.1\r\nHost: ")
                        else:  # A full request whose reply is never read.
                            s.sendall((head % (host, len(good))).encode() + good)
                    self.tally.ok("disconnect http")
                except OSError as e:
                    self.tally.fail("disconnect http", "cannot connect: %s" % e)
                time.sleep(float(rng.uniform(0.005, 0.02)))
        finally:
            grpc_client.close()

    # ---- the run ----

    def test_soak(self):
        self.assertTrue(SERVER_PID, "KILN_SERVE_PID is not set")
        stats_client = httpclient.InferenceServerClient(HTTP_URL, connection_timeout=TIMEOUT_S,
                                                        network_timeout=TIMEOUT_S)
        before = stats_client.get_inference_statistics("dense")["model_stats"][0]
        workers = [
            threading.Thread(target=self.good_http, args=(False, 1)),
            threading.Thread(target=self.good_http, args=(True, 2)),
            threading.Thread(target=self.good_grpc, args=(3,)),
            threading.Thread(target=self.good_grpc, args=(4,)),
            threading.Thread(target=self.bad_http),
            threading.Thread(target=self.bad_grpc),
            threading.Thread(target=self.disconnects, args=(5,)),
        ]
        for w in workers:
            w.start()
        samples = []  # (seconds since start, RSS bytes)
        start = time.monotonic()
        not_live = 0
        while self.running():
            time.sleep(1.0)
            samples.append((time.monotonic() - start, rss_bytes()))
            try:
                if not stats_client.is_server_live():
                    not_live += 1
            except InferenceServerException:
                not_live += 1
        for w in workers:
            w.join(timeout=2 * TIMEOUT_S)
            self.assertFalse(w.is_alive(), "a soak thread did not finish")
        samples.append((time.monotonic() - start, rss_bytes()))

        counts = dict(sorted(self.tally.counts.items()))
        for what, n in counts.items():
            print("  %-34s %d" % (what, n))
        for f in self.tally.failures:
            print("  failure: " + f)
        self.assertEqual(not_live, 0, "the server was not live during the soak")
        self.assertEqual(self.tally.total("FAILED"), 0, self.tally.failures)
        for kind in ("good http json", "good http binary", "good grpc", "bad http", "bad grpc",
                     "disconnect"):
            self.assertGreater(self.tally.total(kind), 0, kind + " sent nothing")
        self.assertTrue(stats_client.is_server_ready())

        # Resident memory: flat after the warm-up.
        after_warmup = [rss for t, rss in samples if t >= WARMUP_S][:3]
        last = [rss for _, rss in samples[-3:]]
        self.assertEqual(len(after_warmup), 3, "too few RSS samples after the warm-up")
        base, end = statistics.median(after_warmup), statistics.median(last)
        growth_mib = (end - base) / 2**20
        print("  RSS after warm-up %.1f MiB, at the end %.1f MiB (growth %.1f MiB, limit %d MiB)"
              % (base / 2**20, end / 2**20, growth_mib, RSS_GROWTH_LIMIT_MIB))
        self.assertLess(growth_mib, RSS_GROWTH_LIMIT_MIB,
                        "resident memory grew: %s" % [(round(t), r >> 20) for t, r in samples])

        # The statistics saw every good dense request, with real durations.
        after = stats_client.get_inference_statistics("dense")["model_stats"][0]
        stats_client.close()
        good_dense = sum(n for k, n in counts.items()
                         if k.startswith("good") and not k.endswith("add_int"))
        delta = {k: after["inference_stats"][k]["count"] - before["inference_stats"][k]["count"]
                 for k in ("success", "queue", "compute_infer")}
        self.assertGreaterEqual(delta["success"], good_dense)
        self.assertEqual(delta["queue"], delta["success"])
        self.assertEqual(delta["compute_infer"], delta["success"])
        ns = {k: after["inference_stats"][k]["ns"] - before["inference_stats"][k]["ns"]
              for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
        self.assertGreater(ns["compute_infer"], 0)
        self.assertLessEqual(ns["queue"] + ns["compute_input"] + ns["compute_infer"]
                             + ns["compute_output"], ns["success"])
        print("  server per good request: %.0f us total, %.0f us queued, %.0f us compute"
              % (ns["success"] / 1e3 / delta["success"], ns["queue"] / 1e3 / delta["success"],
                 ns["compute_infer"] / 1e3 / delta["success"]))


def main():
    return run_module(__name__)


if __name__ == "__main__":
    sys.exit(main())
