#!/usr/bin/env bash
# Session 6, device call 5 (final code): GPU tests; every issue-5 case against PyTorch in the same call (each
# kiln benchmark run twice, the second from the timing cache); ResNet-50 b256 per-layer profile.
set -uo pipefail
export PYTHONUNBUFFERED=1
KILN_GPU_CHECK=none scripts/gpu-check > $OUT/setup.log 2>&1
source <(grep -A12 '^if \[ -d .gpu/bin \]' scripts/gpu-check | sed -n '2,10p')
export KILN_MODELS_DIR=$(pwd)/models KILN_BINARY=$(pwd)/.gpu/bin/kiln
export KILN_ONNX_TESTDATA=$(pwd)/.gpu/onnx-testdata/data
m=$KILN_MODELS_DIR
echo "setup $SECONDS s"
timeout 160 .gpu/bin/kiln_tests --gtest_brief=1 > $OUT/gtest.log 2>&1; echo "kiln_tests exit $?"
grep -E "^\[  (PASSED|SKIPPED) |^\[  FAILED  \]|tests ran" $OUT/gtest.log | head -30
echo "tests done $SECONDS s"
mkdir -p $OUT/bench $OUT/profile; c=/tmp/kiln_timing.cache
b() { local n=$1; shift; timeout 60 .gpu/bin/kiln bench "$@" --timing-cache $c --json $OUT/bench/bench_$n.json > $OUT/bench/bench_$n.log 2>&1; echo "$n: $(grep -E 'GPU compute|launches per|build:' $OUT/bench/bench_$n.log | tr -s ' ' | tr '\n' ' ')"; }
bert() { b "$1" $m/bert.onnx --fp16 --shapes input_ids=$2x128 --shapes attention_mask=$2x128 --cuda-graph "${@:3}"; }
for round in 1 2; do
  b r${round}_resnet50_fp16_b1 $m/resnet50.onnx --fp16 --batch 1 --cuda-graph
  b r${round}_resnet50_fp16_b256 $m/resnet50.onnx --fp16 --batch 256 --cuda-graph
  b r${round}_resnet18_fp16_b256 $m/resnet18.onnx --fp16 --batch 256 --cuda-graph
  bert r${round}_bert_fp16_b128 128
  bert r${round}_bert_fp16_b1 1
done
timeout 40 .gpu/bin/kiln bench $m/resnet50.onnx --fp16 --batch 256 --cuda-graph --timing-cache $c --profile > $OUT/profile/resnet50_fp16_b256_profile.log 2>&1
grep -E "ConvPool|sum " $OUT/profile/resnet50_fp16_b256_profile.log
echo "benches done $SECONDS s"
timeout 100 python3 bench/pytorch_baseline.py --out $OUT/bench/pytorch.jsonl --cases bert:128,bert:1,resnet50:1,resnet50:256,resnet18:256 > $OUT/bench/pytorch.log 2>&1
python3 bench/compare_table.py $OUT/bench | tee $OUT/compare.md
tar -cf $OUT/bench.tar -C $OUT bench profile && rm -rf $OUT/bench $OUT/profile
echo "elapsed $SECONDS s"
