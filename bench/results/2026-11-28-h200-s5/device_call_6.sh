#!/usr/bin/env bash
# Session 5, device call 6: BERT with dependent launches off/on, alternating, every run from a warm timing
# cache (no tactic timing in the measuring process), then PyTorch BERT in the same call.
set -uo pipefail
export PYTHONUNBUFFERED=1
KILN_GPU_CHECK=none scripts/gpu-check > $OUT/setup.log 2>&1
source <(grep -A12 '^if \[ -d .gpu/bin \]' scripts/gpu-check | sed -n '2,10p')
export KILN_MODELS_DIR=$(pwd)/models
m=$KILN_MODELS_DIR
echo "setup $SECONDS s"
mkdir -p $OUT/bench $OUT/fresh; c=/tmp/kiln_timing.cache
b() { local d=$1 n=$2; shift 2; timeout 60 .gpu/bin/kiln bench "$@" --timing-cache $c --json $OUT/$d/bench_$n.json > $OUT/$d/bench_$n.log 2>&1; echo "$n: $(grep -E 'GPU compute|build:' $OUT/$d/bench_$n.log | tr -s ' ' | tr '\n' ' ')"; }
bert() { local d=$1 n=$2 bs=$3; shift 3; b $d $n $m/bert.onnx --fp16 --shapes input_ids=${bs}x128 --shapes attention_mask=${bs}x128 --cuda-graph "$@"; }
bert fresh bert_fp16_b1 1; bert fresh bert_fp16_b128 128
for round in 1 2; do
  bert bench off${round}_bert_fp16_b1 1; KILN_PDL=1 bert bench pdl${round}_bert_fp16_b1 1
  bert bench off${round}_bert_fp16_b128 128; KILN_PDL=1 bert bench pdl${round}_bert_fp16_b128 128
done
timeout 90 python3 bench/pytorch_baseline.py --out $OUT/bench/pytorch.jsonl --cases bert:128,bert:1 > $OUT/bench/pytorch.log 2>&1
python3 bench/compare_table.py $OUT/bench | tee $OUT/compare.md
cp $OUT/bench/pytorch.jsonl $OUT/fresh/ && python3 bench/compare_table.py $OUT/fresh | tail -4
tar -cf $OUT/bench.tar -C $OUT bench fresh && rm -rf $OUT/bench $OUT/fresh
echo "elapsed $SECONDS s"
