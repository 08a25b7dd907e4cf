"""Triton's system shared memory extension: the real tritonclient (HTTP and
gRPC) with tritonclient.utils.shared_memory against a running `kiln serve`.

Inputs and outputs of the "dense" model (Y = Relu(X @ W + B), Z = 2 X) go
through POSIX shared memory regions the client creates and registers; the
results must equal numpy's, and every mistake (duplicate region, unknown
region, sizes that do not fit, CUDA shared memory) must get the protocol's
error with the server still serving.

scripts/serve-test sets KILN_SERVE_HTTP_URL, KILN_SERVE_GRPC_URL and
KILN_SERVE_REFERENCE (see test_http_client.py).
"""
import os
import sys
import threading
import unittest

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException
from serve_common import random_x, reference, run_module

HTTP_URL = os.environ.get("KILN_SERVE_HTTP_URL", "127.0.0.1:8000")
GRPC_URL = os.environ.get("KILN_SERVE_GRPC_URL", "127.0.0.1:8001")
TIMEOUT_S = 30.0




class Regions:
    """Client-side regions (create + register), always unregistered and destroyed."""

    def __init__(self, client, tag):
        self.client = client
        self.tag = f"kiln_test_{os.getpid()}_{tag}"
        self.handles = {}

    def create(self, name, byte_size, register=True):
        region = f"{self.tag}_{name}"
        key = "/" + region
        handle = shm.create_shared_memory_region(region, key, byte_size)
        self.handles[name] = handle
        if register:
            self.client.register_system_shared_memory(region, key, byte_size)
        return region, handle

    def close(self):
        for name in list(self.handles):
            try:
                self.client.unregister_system_shared_memory(f"{self.tag}_{name}")
            except InferenceServerException:
                pass
            shm.destroy_shared_memory_region(self.handles.pop(name))


class SharedMemoryMixin:
    module = None  # httpclient or grpcclient

    def status_names(self):
        status = self.client.get_system_shared_memory_status()
        if self.module is grpcclient:
            return sorted(status.regions.keys())
        return sorted(r["name"] for r in status)

    def setUp(self):
        self.regions = Regions(self.client, self.id().split(".")[-1] + "_" + self.protocol)

    def tearDown(self):
        self.regions.close()

    def new_client(self):
        if self.module is grpcclient:
            return grpcclient.InferenceServerClient(GRPC_URL)
        return httpclient.InferenceServerClient(
            HTTP_URL, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)

    def infer_in_shm(self, batch, seed, z_in_shm=True, offset=0, client=None, regions=None):
        """X in shm; Y in shm; Z in shm (after Y, at `offset`) or in the reply."""
        client = client or self.client
        regions = regions or self.regions
        x = random_x(batch, seed)
        in_name, in_handle = regions.create(f"in{seed}", x.nbytes)
        shm.set_shared_memory_region(in_handle, [x])
        y_bytes, z_bytes = batch * 8 * 4, batch * 16 * 4
        out_name, out_handle = regions.create(f"out{seed}", offset + y_bytes + z_bytes + 64)
        shm.set_shared_memory_region(out_handle, [np.full(
            (offset + y_bytes + z_bytes + 64) // 4, np.nan, np.float32)])
        inp = self.module.InferInput("X", list(x.shape), "FP32")
        inp.set_shared_memory(in_name, x.nbytes)
        out_y = self.module.InferRequestedOutput("Y")
        out_y.set_shared_memory(out_name, y_bytes)
        out_z = self.module.InferRequestedOutput("Z")
        if z_in_shm:
            out_z.set_shared_memory(out_name, z_bytes + 64, offset=y_bytes + offset)
        result = client.infer("dense", [inp], outputs=[out_y, out_z])
        y_ref, z_ref = reference(x)
        y = shm.get_contents_as_numpy(out_handle, np.float32, [batch, 8])
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
        if z_in_shm:
            z = shm.get_contents_as_numpy(out_handle, np.float32, [batch, 16], offset=y_bytes + offset)
        else:
            z = result.as_numpy("Z")
        np.testing.assert_array_equal(z, z_ref)
        # The reply describes Y but does not carry it (HTTP: no "data" and,
        # as Triton, no "parameters"; gRPC: an empty raw entry).
        y_out = result.get_output("Y")
        if self.module is grpcclient:
            self.assertEqual(list(y_out.shape), [batch, 8])
            self.assertEqual(y_out.parameters["shared_memory_region"].string_param, out_name)
            self.assertEqual(y_out.parameters["shared_memory_byte_size"].int64_param, y_bytes)
        else:
            self.assertEqual(y_out["shape"], [batch, 8])
            self.assertEqual(y_out["datatype"], "FP32")
            self.assertNotIn("data", y_out)
            self.assertNotIn("parameters", y_out)
        return in_name, out_name

    def test_register_status_unregister(self):
        in_name, _ = self.regions.create("a", 1024)
        out_name, _ = self.regions.create("b", 2048)
        names = self.status_names()
        self.assertIn(in_name, names)
        self.assertIn(out_name, names)
        one = self.client.get_system_shared_memory_status(in_name)
        if self.module is grpcclient:
            region = one.regions[in_name]
            self.assertEqual((region.key, region.offset, region.byte_size), ("/" + in_name, 0, 1024))
        else:
            self.assertEqual(one, [{"name": in_name, "key": "/" + in_name, "offset": 0, "byte_size": 1024}])
        self.client.unregister_system_shared_memory(in_name)
        self.assertNotIn(in_name, self.status_names())
        with self.assertRaises(InferenceServerException):
            self.client.get_system_shared_memory_status(in_name)

    def test_infer_all_in_shared_memory(self):
        for batch, seed in ((1, 1), (5, 2), (8, 3)):
            self.infer_in_shm(batch, seed, z_in_shm=True, offset=0)
        self.infer_in_shm(3, 4, z_in_shm=True, offset=40)

    def test_infer_mixed(self):
        self.infer_in_shm(4, 5, z_in_shm=False)

    def test_concurrent_clients_batch(self):
        """Eight threads, each with its own client and regions, infer at once."""
        errors = []

        def worker(k):
            client = self.new_client()
            regions = Regions(client, f"worker{k}_{self.protocol}")
            try:
                for i in range(5):
                    self.infer_in_shm(2, 100 + 10 * k + i, client=client, regions=regions)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(repr(e))
            finally:
                regions.close()
                client.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT_S)
        self.assertEqual(errors, [])

    def test_errors_keep_serving(self):
        name, handle = self.regions.create("err", 16 * 4 * 2)
        key = "/" + name
        with self.assertRaises(InferenceServerException) as ctx:  # Duplicate name.
            self.client.register_system_shared_memory(name, key, 64)
        self.assertIn("already registered", str(ctx.exception))
        with self.assertRaises(InferenceServerException):  # No such object.
            self.client.register_system_shared_memory(name + "_x", key + "_missing", 64)
        with self.assertRaises(InferenceServerException):  # Window past the object's end.
            self.client.register_system_shared_memory(name + "_y", key, 64, offset=100)
        x = random_x(2, 7)
        shm.set_shared_memory_region(handle, [x])

        def infer(region, byte_size, offset=0):
            inp = self.module.InferInput("X", [2, 16], "FP32")
            inp.set_shared_memory(region, byte_size, offset=offset)
            return self.client.infer("dense", [inp])

        for args in ((name, x.nbytes - 4),  # byte_size does not match the shape
                     (name, x.nbytes, 8),  # offset + byte_size past the region
                     (name + "_unknown", x.nbytes)):
            with self.assertRaises(InferenceServerException, msg=str(args)):
                infer(*args)
        # Output region too small for Y.
        inp = self.module.InferInput("X", [2, 16], "FP32")
        inp.set_shared_memory(name, x.nbytes)
        out = self.module.InferRequestedOutput("Y")
        out.set_shared_memory(name, 16)
        with self.assertRaises(InferenceServerException) as ctx:
            self.client.infer("dense", [inp], outputs=[out])
        self.assertIn("should be at least", str(ctx.exception))
        # Good requests still work, and unregistered regions are gone.
        result = infer(name, x.nbytes)
        np.testing.assert_allclose(result.as_numpy("Y"), reference(x)[0], rtol=1e-5, atol=1e-5)
        self.client.unregister_system_shared_memory(name)
        with self.assertRaises(InferenceServerException):
            infer(name, x.nbytes)
        self.assertTrue(self.client.is_server_live())

    def test_cuda_shared_memory_not_supported(self):
        self.client.unregister_cuda_shared_memory()  # Nothing registered: fine.
        with self.assertRaises(InferenceServerException) as ctx:
            self.client.register_cuda_shared_memory("cuda_region", b"\0" * 64, 0, 64)
        self.assertIn("not supported", str(ctx.exception))
        self.assertTrue(self.client.is_server_live())


class HttpSharedMemoryTest(SharedMemoryMixin, unittest.TestCase):
    module = httpclient
    protocol = "http"

    @classmethod
    def setUpClass(cls):
        cls.client = httpclient.InferenceServerClient(
            HTTP_URL, concurrency=8, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()


class GrpcSharedMemoryTest(SharedMemoryMixin, unittest.TestCase):
    module = grpcclient
    protocol = "grpc"

    @classmethod
    def setUpClass(cls):
        cls.client = grpcclient.InferenceServerClient(GRPC_URL)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()


def main():
    return run_module(__name__)


if __name__ == "__main__":
    sys.exit(main())
