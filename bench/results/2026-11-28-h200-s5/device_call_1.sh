#!/usr/bin/env bash
# Session 5, device call 1: GPU tests, BERT b1/b128 (profiles), ResNet-50 b1, PyTorch side by side, conformance.
set -uo pipefail
export PYTHONUNBUFFERED=1
KILN_GPU_CHECK=none scripts/gpu-check > $OUT/setup.log 2>&1
source <(grep -A12 '^if \[ -d .gpu/bin \]' scripts/gpu-check | sed -n '2,10p')
export KILN_MODELS_DIR=$(pwd)/models KILN_BINARY=$(pwd)/.gpu/bin/kiln
m=$KILN_MODELS_DIR
export KILN_ONNX_TESTDATA=/usr/share/libonnx-testdata/data
[ -d $KILN_ONNX_TESTDATA ] || export KILN_ONNX_TESTDATA=$(pwd)/.gpu/onnx-testdata/data
echo "setup $SECONDS s"
timeout 200 .gpu/bin/kiln_tests --gtest_brief=1 > $OUT/gtest.log 2>&1; echo "kiln_tests exit $?"
grep -E "^\[  (PASSED|SKIPPED) |^\[  FAILED  \]|tests ran" $OUT/gtest.log | head -30
mkdir -p $OUT/bench; c=/tmp/kiln_timing.cache
b() { local n=$1; shift; timeout 90 .gpu/bin/kiln bench "$@" --cuda-graph --timing-cache $c --json $OUT/bench/bench_$n.json > $OUT/bench/bench_$n.log 2>&1; echo "$n: $(grep -E 'GPU compute|launches per|lowered' $OUT/bench/bench_$n.log | tr -s ' ' | tr '\n' ' ')"; }
b bert_fp16_b1 $m/bert.onnx --fp16 --shapes input_ids=1x128 --shapes attention_mask=1x128 --profile
b bert_fp16_b128 $m/bert.onnx --fp16 --shapes input_ids=128x128 --shapes attention_mask=128x128 --profile
b resnet50_fp16_b1 $m/resnet50.onnx --fp16 --batch 1
b bert_fp16_b1_again $m/bert.onnx --fp16 --shapes input_ids=1x128 --shapes attention_mask=1x128
timeout 120 python3 bench/pytorch_baseline.py --out $OUT/bench/pytorch.jsonl --cases bert:128,bert:1,resnet50:1 > $OUT/bench/pytorch.log 2>&1
python3 bench/compare_table.py $OUT/bench | tee $OUT/compare.md
echo "elapsed $SECONDS s"
left=$((560 - SECONDS))
if [ $left -gt 60 ]; then
  timeout $left .gpu/bin/kiln_conformance --backend gpu --data-dir "$KILN_ONNX_TESTDATA" --jobs 12 --timeout 120 \
    --expectations tests/conformance/expectations.txt --expectations tests/conformance/expectations_gpu.txt > $OUT/conformance_gpu.log 2>&1
  echo "conformance exit $?"; grep -E "FAILED|passed, " $OUT/conformance_gpu.log | head -20
fi
tar -cf $OUT/bench.tar -C $OUT bench && rm -rf $OUT/bench
echo "elapsed $SECONDS s"
