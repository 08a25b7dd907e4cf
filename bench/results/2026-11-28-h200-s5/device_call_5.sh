#!/usr/bin/env bash
# Session 5, final device call: GPU tests, kiln vs PyTorch on every issue-5 case (same call), dependent launches
# on/off (no --profile on either), BERT b128 per-layer profile, then the GPU conformance suite in the time left.
set -uo pipefail
export PYTHONUNBUFFERED=1
KILN_GPU_CHECK=none scripts/gpu-check > $OUT/setup.log 2>&1
source <(grep -A12 '^if \[ -d .gpu/bin \]' scripts/gpu-check | sed -n '2,10p')
export KILN_MODELS_DIR=$(pwd)/models KILN_BINARY=$(pwd)/.gpu/bin/kiln
m=$KILN_MODELS_DIR
export KILN_ONNX_TESTDATA=$(pwd)/.gpu/onnx-testdata/data
echo "setup $SECONDS s"
timeout 200 .gpu/bin/kiln_tests --gtest_brief=1 > $OUT/gtest.log 2>&1; echo "kiln_tests exit $?"
grep -E "^\[  (PASSED|SKIPPED) |^\[  FAILED  \]|tests ran" $OUT/gtest.log | head -30
mkdir -p $OUT/bench; c=/tmp/kiln_timing.cache
b() { local n=$1; shift; timeout 90 .gpu/bin/kiln bench "$@" --timing-cache $c --json $OUT/bench/bench_$n.json > $OUT/bench/bench_$n.log 2>&1; echo "$n: $(grep -E 'GPU compute|launches per|build:' $OUT/bench/bench_$n.log | tr -s ' ' | tr '\n' ' ')"; }
bert() { b "$1" $m/bert.onnx --fp16 --shapes input_ids=$2x128 --shapes attention_mask=$2x128 --cuda-graph "${@:3}"; }
bert bert_fp16_b1 1
bert bert_fp16_b128 128
KILN_PDL=1 bert pdl_bert_fp16_b1 1
KILN_PDL=1 bert pdl_bert_fp16_b128 128
b resnet50_fp16_b1 $m/resnet50.onnx --fp16 --batch 1 --cuda-graph
b resnet50_fp16_b256 $m/resnet50.onnx --fp16 --batch 256 --cuda-graph
b resnet18_fp16_b256 $m/resnet18.onnx --fp16 --batch 256 --cuda-graph
timeout 150 python3 bench/pytorch_baseline.py --out $OUT/bench/pytorch.jsonl --cases bert:128,bert:1,resnet50:1,resnet50:256,resnet18:256 > $OUT/bench/pytorch.log 2>&1
python3 bench/compare_table.py $OUT/bench | tee $OUT/compare.md
mkdir -p $OUT/profile
timeout 90 .gpu/bin/kiln bench $m/bert.onnx --fp16 --shapes input_ids=128x128 --shapes attention_mask=128x128 --cuda-graph --timing-cache $c --profile > $OUT/profile/bert_fp16_b128_profile.log 2>&1
timeout 90 .gpu/bin/kiln bench $m/bert.onnx --fp16 --shapes input_ids=1x128 --shapes attention_mask=1x128 --cuda-graph --timing-cache $c --profile > $OUT/profile/bert_fp16_b1_profile.log 2>&1
echo "elapsed $SECONDS s"
left=$((545 - SECONDS))
if [ $left -gt 60 ]; then
  timeout $left .gpu/bin/kiln_conformance --backend gpu --data-dir "$KILN_ONNX_TESTDATA" --jobs 12 --timeout 120 \
    --expectations tests/conformance/expectations.txt --expectations tests/conformance/expectations_gpu.txt > $OUT/conformance_gpu.log 2>&1
  echo "conformance exit $?"; grep -E "FAILED|passed, " $OUT/conformance_gpu.log | head -20
fi
tar -cf $OUT/bench.tar -C $OUT bench profile && rm -rf $OUT/bench $OUT/profile
echo "elapsed $SECONDS s"
