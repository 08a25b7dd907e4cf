"""Helpers shared by the tritonclient tests in this folder: the reference
model's expected outputs, random inputs, and the RESULT line
scripts/serve-test counts."""
import os
import sys
import unittest

import numpy as np

REFERENCE = os.environ.get("KILN_SERVE_REFERENCE", "")


def reference(x):
    """The 'dense' model of make_repository.py: relu(x @ W + B) and x * 2."""
    W = np.load(os.path.join(REFERENCE, "W.npy"))
    B = np.load(os.path.join(REFERENCE, "B.npy"))
    return np.maximum(x @ W + B, 0).astype(np.float32), (x * 2).astype(np.float32)


def random_x(batch, seed):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 16)).astype(np.float32)


def run_module(module_name):
    """Runs a test module's cases; prints `RESULT passed=N failed=M skipped=K`."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module_name])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"RESULT passed={passed} failed={failed} skipped={skipped}")
    return 0 if failed == 0 else 1
