#!/usr/bin/env python3
"""PyTorch baselines for kiln's benchmarks, on the same models and shapes.

Runs each model in FP16 with PyTorch eager (channels_last for CNNs), eager
replayed as a CUDA Graph, and optionally torch.compile, timing with CUDA
events after warm-up (median and p99 of per-iteration times), and writes one
JSON line per configuration. Models are built exactly as
scripts/export_models.py builds them (same seeds and architecture).

  python3 bench/pytorch_baseline.py --out results.jsonl [--compile]
"""
import argparse
import json
import os
import sys
import time
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import export_models  # noqa: E402


def time_fn(fn, iterations, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(iterations):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(0.99 * (len(times) - 1) + 0.5))]


def cuda_graph(fn):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def sdpa_attention_forward(self, x, mask_bias):
    """SelfAttention.forward with PyTorch's fused scaled_dot_product_attention
    (same weights and math as scripts/export_models.py's matmul/softmax form):
    the strongest eager PyTorch baseline for BERT."""
    q = self._split_heads(self.query(x))
    k = self._split_heads(self.key(x))
    v = self._split_heads(self.value(x))
    context = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias)
    context = context.permute(0, 2, 1, 3)
    batch, seq = context.shape[0], context.shape[1]
    return self.out(context.reshape(batch, seq, self.heads * self.head_dim))


def use_sdpa(model):
    for layer in model.layers:
        layer.attention.forward = types.MethodType(sdpa_attention_forward, layer.attention)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--compile", action="store_true", help="also torch.compile (slow to compile)")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--cases", default="resnet50:256,resnet50:1,resnet18:256,bert:128,bert:1",
                   help="model:batch list")
    p.add_argument("--compile-cases", default=None,
                   help="model:batch list to torch.compile (default: all cases when --compile)")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    compile_cases = set(args.compile_cases.split(",")) if args.compile_cases else None
    out = open(args.out, "w")
    for name, batch in cases:
        torch.manual_seed(export_models.SEED + export_models.ALL_MODELS.index(name))
        if name == "bert":
            cfg = export_models.BertConfig()
            model = export_models.BertEncoder(cfg)
            export_models._init_bert(model)
            ids, mask = export_models._bert_inputs(batch, 128, [0] * batch)
            inputs = (ids.cuda(), mask.cuda())
            model = model.eval().cuda().half()
        else:
            model = export_models.build_cnn(name).eval().cuda().half().to(memory_format=torch.channels_last)
            inputs = (torch.randn(batch, 3, 224, 224, device="cuda").half().to(memory_format=torch.channels_last),)
        variants = [("eager", lambda: model(*inputs))]
        variants.append(("cuda_graph", None))
        if name == "bert":
            variants.append(("sdpa", "sdpa"))
            variants.append(("sdpa_cuda_graph", None))
        if args.compile and (compile_cases is None or f"{name}:{batch}" in compile_cases):
            compiled = torch.compile(model, mode="max-autotune")
            variants.append(("torch_compile", lambda: compiled(*inputs)))
        with torch.inference_mode():
            for variant, fn in variants:
                t0 = time.time()
                if fn == "sdpa":
                    use_sdpa(model)
                    fn = lambda: model(*inputs)
                    fn()
                elif variant.endswith("cuda_graph"):
                    fn = cuda_graph(lambda: model(*inputs))
                else:
                    fn()
                setup_s = time.time() - t0
                median, p99 = time_fn(fn, args.iterations)
                row = {"model": name, "batch": batch, "variant": variant, "median_ms": median,
                       "p99_ms": p99, "samples_per_s": batch * 1000.0 / median, "setup_s": setup_s,
                       "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + "\n")
    out.close()


if __name__ == "__main__":
    main()
