#!/usr/bin/python3
"""Exports kiln's real-model test set: ONNX files plus reference data.

    /usr/bin/python3 scripts/export_models.py --out models [--models resnet18,bert] [--force]

Writes, per model, OUT/<model>.onnx and OUT/<model>/test_data_set_{0,1}/ in the ONNX
backend-test layout (input_N.pb / output_N.pb), with outputs computed by PyTorch in float32.
Weights are seeded random (no network, no pretrained downloads); BatchNorm statistics are
calibrated on random data and then perturbed, so BN folding sees non-trivial stats while
activations stay well scaled. BERT is a plain PyTorch BERT-base-style encoder (the
transformers package is not needed).

Uses Debian's torch 1.13 / torchvision 0.14 / onnx 1.12; opset 17.
"""

import argparse
import inspect
import math
import os
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper
import torch
from torch import nn

OPSET = 17
ALL_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "bert"]
SEED = 1234


# ---------------------------------------------------------------------------
# CNNs (torchvision)
# ---------------------------------------------------------------------------


# torch >= 2.9 defaults to the dynamo exporter; kiln's tests pin the
# TorchScript exporter that Debian's torch 1.13 uses, so both produce the same
# graphs (the GPU host runs this script with a newer torch).
LEGACY_EXPORTER = (
    {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
)


def _calibrate_and_perturb_batchnorm(model, image_size):
    """Gives every BatchNorm running stats from random data, then random affine params.

    Calibrating (one train-mode pass with cumulative averaging) keeps activations
    well scaled through deep nets; the random weight/bias and the calibrated
    mean/var make BN folding non-trivial.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, image_size, image_size))
    model.eval()
    with torch.no_grad():
        for bn in bns:
            bn.momentum = 0.1  # back to the default; only the exported attribute sees it
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.25, 0.25)
            # Perturb the stats too, so they are not exactly the batch's.
            bn.running_mean.add_(torch.empty_like(bn.running_mean).uniform_(-0.05, 0.05))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))


def build_cnn(name):
    import torchvision

    constructor = getattr(torchvision.models, name)
    model = constructor(weights=None, num_classes=1000)
    _calibrate_and_perturb_batchnorm(model, 224)
    return model


def export_cnn(name, out_dir):
    model = build_cnn(name)
    path = os.path.join(out_dir, name + ".onnx")
    example = torch.randn(1, 3, 224, 224)
    torch.onnx.export(
        model,
        (example,),
        path,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
        **LEGACY_EXPORTER,
        # PRESERVE (with the model in eval mode) exports inference-mode BatchNormalization
        # nodes; the default EVAL mode would fuse BN into Conv in torch's exporter, leaving
        # nothing for kiln's own BN folding to do.
        training=torch.onnx.TrainingMode.PRESERVE,
    )
    data_sets = []
    for batch in (2, 1):
        image = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            logits = model(image)
        data_sets.append(([("input", image.numpy())], [("logits", logits.numpy())]))
    return path, data_sets


# ---------------------------------------------------------------------------
# BERT-base-style encoder
# ---------------------------------------------------------------------------


class BertConfig:
    vocab_size = 30522
    hidden = 768
    layers = 12
    heads = 12
    intermediate = 3072
    max_positions = 512
    type_vocab_size = 2
    layer_norm_eps = 1e-12


class BertEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, input_ids):
        seq = input_ids.shape[1]
        positions = torch.arange(seq, dtype=torch.int64, device=input_ids.device).unsqueeze(0)
        token_types = torch.zeros_like(input_ids)  # single-segment input
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_types)
        return self.norm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)

    def _split_heads(self, x):
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, mask_bias):
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + mask_bias, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3)
        batch, seq = context.shape[0], context.shape[1]
        return self.out(context.reshape(batch, seq, self.heads * self.head_dim))


class EncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden, cfg.intermediate)
        self.ffn_out = nn.Linear(cfg.intermediate, cfg.hidden)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.gelu = nn.GELU()

    def forward(self, x, mask_bias):
        x = self.attention_norm(x + self.attention(x, mask_bias))  # post-LayerNorm
        return self.ffn_norm(x + self.ffn_out(self.gelu(self.ffn_in(x))))


class BertEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.layers)])
        self.pooler = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, input_ids, attention_mask):
        # [batch, seq] 1/0 -> additive bias [batch, 1, 1, seq]: 0 keeps, -10000 masks.
        # In the model's dtype (float32 when exported; float16 in bench/pytorch_baseline.py).
        mask = attention_mask.to(self.pooler.weight.dtype)[:, None, None, :]
        mask_bias = (1.0 - mask) * -10000.0
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


def _init_bert(model):
    # BERT's own init: N(0, 0.02) weights, zero biases; LayerNorm params randomized a little
    # so they are not the identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, 0.02)
                if isinstance(m, nn.Linear):
                    m.bias.uniform_(-0.02, 0.02)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)


def _bert_inputs(batch, seq, masked_tail):
    """Random token ids (never 0) and a mask whose last masked_tail[i] positions are 0."""
    ids = torch.randint(1, BertConfig.vocab_size, (batch, seq), dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    for row, tail in enumerate(masked_tail):
        if tail:
            mask[row, seq - tail:] = 0
    return ids, mask


def export_bert(out_dir, layers):
    cfg = BertConfig()
    cfg.layers = layers
    model = BertEncoder(cfg)
    _init_bert(model)
    model.eval()
    path = os.path.join(out_dir, "bert.onnx")
    ids, mask = _bert_inputs(1, 8, [0])
    torch.onnx.export(
        model,
        (ids, mask),
        path,
        opset_version=OPSET,
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"},
            "pooler_output": {0: "batch"},
        },
        do_constant_folding=True,
        **LEGACY_EXPORTER,
    )
    data_sets = []
    # Set 0: batch 2, seq 128, second row padded. Set 1: batch 1, seq 16, tail masked.
    for batch, seq, tails in ((2, 128, [0, 40]), (1, 16, [5])):
        ids, mask = _bert_inputs(batch, seq, tails)
        with torch.no_grad():
            hidden, pooled = model(ids, mask)
        data_sets.append(
            (
                [("input_ids", ids.numpy()), ("attention_mask", mask.numpy())],
                [("last_hidden_state", hidden.numpy()), ("pooler_output", pooled.numpy())],
            )
        )
    return path, data_sets


# ---------------------------------------------------------------------------


def write_data_sets(model_dir, data_sets):
    for index, (inputs, outputs) in enumerate(data_sets):
        set_dir = os.path.join(model_dir, "test_data_set_%d" % index)
        os.makedirs(set_dir, exist_ok=True)
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for i, (name, array) in enumerate(tensors):
                proto = numpy_helper.from_array(np.ascontiguousarray(array), name)
                with open(os.path.join(set_dir, "%s_%d.pb" % (kind, i)), "wb") as f:
                    f.write(proto.SerializeToString())
        shapes = ", ".join("%s%s" % (n, list(a.shape)) for n, a in inputs)
        print("  %s: %s" % (os.path.relpath(set_dir, os.path.dirname(model_dir)), shapes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--models", default=",".join(ALL_MODELS),
                        help="comma-separated subset of " + ",".join(ALL_MODELS))
    parser.add_argument("--bert-layers", type=int, default=12, help="encoder layers for bert")
    parser.add_argument("--force", action="store_true", help="re-export existing models")
    args = parser.parse_args()

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        parser.error("unknown model(s): %s (choose from %s)" % (", ".join(unknown),
                                                                ", ".join(ALL_MODELS)))
    if args.bert_layers < 1:
        parser.error("--bert-layers must be >= 1")
    os.makedirs(args.out, exist_ok=True)

    start_all = time.time()
    for name in models:
        path = os.path.join(args.out, name + ".onnx")
        if os.path.exists(path) and not args.force:
            print("%s: %s exists, skipped (use --force to re-export)" % (name, path))
            continue
        start = time.time()
        # Seed per model so each model's weights and data do not depend on which others run.
        torch.manual_seed(SEED + ALL_MODELS.index(name))
        if name == "bert":
            path, data_sets = export_bert(args.out, args.bert_layers)
        else:
            path, data_sets = export_cnn(name, args.out)
        onnx.checker.check_model(path)  # path form: works for models of any size
        size_mb = os.path.getsize(path) / 1e6
        print("%s: wrote %s (%.1f MB)" % (name, path, size_mb))
        write_data_sets(os.path.join(args.out, name), data_sets)
        print("%s: done in %.1f s" % (name, time.time() - start))
    print("all done in %.1f s" % (time.time() - start_all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
