#!/usr/bin/env python3
"""Served throughput against the engine's offline throughput at the same batch size.

    python3 bench/serve_vs_engine.py SWEEP_JSON PERF_JSON...

SWEEP_JSON is `kiln bench --sweep ... --json` of the model the server runs (one
engine per batch size, CUDA Graph replays back to back, inputs on the device);
each PERF_JSON is a `kiln perf --json` report against `kiln serve`, whose
server statistics give the batches the dynamic batcher formed at every step
(average batch = inferences / executions). The engine's time per batch is
interpolated linearly between the two swept batch sizes around that average,
so "engine at the same batch" means the offline engine running batches of the
served average size. Issue 6's high-load target: served >= 90% of it.
"""
import json
import sys


def engine_per_second(sweep, batch):
    """Samples/s of the engine at `batch` (time per batch interpolated)."""
    points = sorted((r["batch"], r["batch"] / r["samples_per_s"])
                    for r in sweep["sweep"] if r.get("ok", True) and r["samples_per_s"] > 0)
    if not points:
        return None
    if batch <= points[0][0]:
        return batch / points[0][1] if batch == points[0][0] else None
    for (b0, t0), (b1, t1) in zip(points, points[1:]):
        if b0 <= batch <= b1:
            t = t0 + (t1 - t0) * (batch - b0) / (b1 - b0)
            return batch / t
    return None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sweep = json.load(open(sys.argv[1]))
    print(f"engine: {sweep['model']} {sweep['precision']} on {sweep['gpu']}")
    print("| report | concurrency | served infer/s | avg batch | engine at that batch (samples/s) | served / engine |")
    print("|---|---|---|---|---|---|")
    for path in sys.argv[2:]:
        perf = json.load(open(path))
        for step in perf["steps"]:
            server = step.get("server", {})
            executions = server.get("executions", 0)
            if not server.get("available") or executions == 0:
                continue
            batch = server["inferences"] / executions
            served = step["inferences_per_second"]
            engine = engine_per_second(sweep, batch)
            ratio = f"{served / engine:.1%}" if engine else "-"
            engine_text = f"{engine:,.0f}" if engine else "-"
            name = path.rsplit("/", 1)[-1]
            print(f"| {name} | {step['concurrency']:g} | {served:,.0f} | {batch:.1f} | {engine_text} | {ratio} |")


if __name__ == "__main__":
    main()
