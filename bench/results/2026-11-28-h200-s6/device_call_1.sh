#!/usr/bin/env bash
# Session 6, device call 1: GPU tests (fused conv-pool stem, float32-writing Gemm), ResNet-50 b1/b256 with the
# stem fused vs not (KILN_CONV_POOL=0), BERT b128 with 16 vs 48 cuBLASLt candidates, PyTorch on the same cases.
set -uo pipefail
export PYTHONUNBUFFERED=1
KILN_GPU_CHECK=none scripts/gpu-check > $OUT/setup.log 2>&1
source <(grep -A12 '^if \[ -d .gpu/bin \]' scripts/gpu-check | sed -n '2,10p')
export KILN_MODELS_DIR=$(pwd)/models KILN_BINARY=$(pwd)/.gpu/bin/kiln
m=$KILN_MODELS_DIR
echo "setup $SECONDS s"
timeout 200 .gpu/bin/kiln_tests --gtest_brief=1 > $OUT/gtest.log 2>&1; echo "kiln_tests exit $?"
grep -E "^\[  (PASSED|SKIPPED) |^\[  FAILED  \]|tests ran" $OUT/gtest.log | head -30
echo "tests done $SECONDS s"
mkdir -p $OUT/bench $OUT/profile; c=/tmp/kiln_timing.cache
b() { local n=$1; shift; timeout 90 .gpu/bin/kiln bench "$@" --timing-cache $c --json $OUT/bench/bench_$n.json > $OUT/bench/bench_$n.log 2>&1; echo "$n: $(grep -E 'GPU compute|launches per|build:' $OUT/bench/bench_$n.log | tr -s ' ' | tr '\n' ' ')"; }
r50() { b "$1" $m/resnet50.onnx --fp16 --batch $2 --cuda-graph; }
for round in 1 2; do
  KILN_CONV_POOL=0 r50 r${round}_unfused_resnet50_fp16_b1 1
  r50 r${round}_resnet50_fp16_b1 1
  KILN_CONV_POOL=0 r50 r${round}_unfused_resnet50_fp16_b256 256
  r50 r${round}_resnet50_fp16_b256 256
done
b r2_resnet18_fp16_b256 $m/resnet18.onnx --fp16 --batch 256 --cuda-graph
b r2_resnet18_fp16_b256 $m/resnet18.onnx --fp16 --batch 256 --cuda-graph
for bs in 1 256; do
  timeout 90 .gpu/bin/kiln bench $m/resnet50.onnx --fp16 --batch $bs --cuda-graph --timing-cache $c --profile > $OUT/profile/resnet50_fp16_b${bs}_profile.log 2>&1
  KILN_CONV_POOL=0 timeout 90 .gpu/bin/kiln bench $m/resnet50.onnx --fp16 --batch $bs --cuda-graph --timing-cache $c --profile > $OUT/profile/unfused_resnet50_fp16_b${bs}_profile.log 2>&1
done
grep -iE "conv1|maxpool|KilnConvPool|PadSpaceToDepth|fc|Gemm|Cast" $OUT/profile/*resnet50*profile.log | head -40
echo "resnet done $SECONDS s"
bert() { b "$1" $m/bert.onnx --fp16 --shapes input_ids=$2x128 --shapes attention_mask=$2x128 --cuda-graph "${@:3}"; }
bert r1_bert_fp16_b128 128
bert r2_bert_fp16_b128 128
c=/tmp/kiln_timing48.cache
KILN_GEMM_CANDIDATES=48 bert r1_c48_bert_fp16_b128 128
KILN_GEMM_CANDIDATES=48 bert r2_c48_bert_fp16_b128 128
KILN_GEMM_CANDIDATES=48 timeout 90 .gpu/bin/kiln bench $m/bert.onnx --fp16 --shapes input_ids=128x128 --shapes attention_mask=128x128 --cuda-graph --timing-cache $c --profile > $OUT/profile/c48_bert_fp16_b128_profile.log 2>&1
grep -E "layers.0/" $OUT/profile/c48_bert_fp16_b128_profile.log
echo "bert done $SECONDS s"
timeout 150 python3 bench/pytorch_baseline.py --out $OUT/bench/pytorch.jsonl --cases bert:128,resnet50:1,resnet50:256,resnet18:256 > $OUT/bench/pytorch.log 2>&1
python3 bench/compare_table.py $OUT/bench | tee $OUT/compare.md
tar -cf $OUT/bench.tar -C $OUT bench profile && rm -rf $OUT/bench $OUT/profile
echo "elapsed $SECONDS s"
