#!/usr/bin/env python3
"""Prints kiln vs PyTorch side by side from one gpu-check run.

  python3 bench/compare_table.py DIR   # DIR holds bench_*.json (kiln bench --json) and pytorch.jsonl

Throughput ratios are kiln / best PyTorch variant (higher is better);
latency ratios (batch 1) are kiln / best PyTorch (lower is better). BERT's
best PyTorch includes the same model with fused SDPA attention. Only
numbers from the same machine and run are compared.
"""
import glob
import json
import os
import sys


def main():
    d = sys.argv[1]
    torch_rows = [json.loads(l) for l in open(os.path.join(d, "pytorch.jsonl")) if l.strip()]
    print("| kiln run | model | batch | kiln samples/s | kiln GPU ms (p50 / p99) | PyTorch eager | PyTorch + CUDA Graph | PyTorch SDPA + CUDA Graph | torch.compile | kiln vs best PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(d, "bench_*_fp16_*.json"))):
        k = json.load(open(path))
        run = os.path.basename(path)[len("bench_"):-len(".json")]
        # The model is the word before "_fp16"; words before it label the run
        # (e.g. "pdl_bert_fp16_b1": dependent launches on).
        model = run.split("_fp16")[0].split("_")[-1]
        batch = k["batch"]
        rows = {r["variant"]: r for r in torch_rows if r["model"] == model and r["batch"] == batch}
        if not rows:
            continue
        kms = k["gpu_compute_ms"]["median"]

        def cell(v):
            r = rows.get(v)
            return "%.0f/s (%.3f ms)" % (r["samples_per_s"], r["median_ms"]) if r else "-"

        best = min(r["median_ms"] for r in rows.values())
        ratio = ("%.3fx throughput" % (best / kms)) if batch > 1 else ("%.3fx latency" % (kms / best))
        print("| %s | %s | %d | %.0f | %.3f / %.3f | %s | %s | %s | %s | %s |" % (
            run, model, batch, k["throughput_samples_per_s"], kms, k["gpu_compute_ms"]["p99"],
            cell("eager"), cell("cuda_graph"), cell("sdpa_cuda_graph"), cell("torch_compile"), ratio))
    print("\nGPU: %s; torch %s" % (torch_rows[0]["gpu"], torch_rows[0]["torch"]))


if __name__ == "__main__":
    main()
