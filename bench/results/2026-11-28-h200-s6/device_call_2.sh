#!/usr/bin/env bash
# Session 6, device call 2: GPU tests; ResNet-50 / ResNet-18 with the conv-pool stem (faster prologue) vs the
# unfused stem; BERT; PyTorch on every issue-5 case in the same call; ncu of the stem and LayerNorm kernels;
# GPU conformance in the time left.
set -uo pipefail
export PYTHONUNBUFFERED=1
KILN_GPU_CHECK=none scripts/gpu-check > $OUT/setup.log 2>&1
source <(grep -A12 '^if \[ -d .gpu/bin \]' scripts/gpu-check | sed -n '2,10p')
export KILN_MODELS_DIR=$(pwd)/models KILN_BINARY=$(pwd)/.gpu/bin/kiln
export KILN_ONNX_TESTDATA=$(pwd)/.gpu/onnx-testdata/data
m=$KILN_MODELS_DIR
echo "setup $SECONDS s"
timeout 200 .gpu/bin/kiln_tests --gtest_brief=1 > $OUT/gtest.log 2>&1; echo "kiln_tests exit $?"
grep -E "^\[  (PASSED|SKIPPED) |^\[  FAILED  \]|tests ran" $OUT/gtest.log | head -30
echo "tests done $SECONDS s"
mkdir -p $OUT/bench $OUT/profile; c=/tmp/kiln_timing.cache
b() { local n=$1; shift; timeout 90 .gpu/bin/kiln bench "$@" --timing-cache $c --json $OUT/bench/bench_$n.json > $OUT/bench/bench_$n.log 2>&1; echo "$n: $(grep -E 'GPU compute|launches per|build:' $OUT/bench/bench_$n.log | tr -s ' ' | tr '\n' ' ')"; }
for round in 1 2; do
  b r${round}_resnet50_fp16_b1 $m/resnet50.onnx --fp16 --batch 1 --cuda-graph
  b r${round}_resnet50_fp16_b256 $m/resnet50.onnx --fp16 --batch 256 --cuda-graph
  b r${round}_resnet18_fp16_b256 $m/resnet18.onnx --fp16 --batch 256 --cuda-graph
  KILN_CONV_POOL=0 b r${round}_unfused_resnet50_fp16_b256 $m/resnet50.onnx --fp16 --batch 256 --cuda-graph
  KILN_CONV_POOL=0 b r${round}_unfused_resnet18_fp16_b256 $m/resnet18.onnx --fp16 --batch 256 --cuda-graph
done
bert() { b "$1" $m/bert.onnx --fp16 --shapes input_ids=$2x128 --shapes attention_mask=$2x128 --cuda-graph "${@:3}"; }
for round in 1 2; do bert r${round}_bert_fp16_b1 1; bert r${round}_bert_fp16_b128 128; done
for bs in 1 256; do
  timeout 90 .gpu/bin/kiln bench $m/resnet50.onnx --fp16 --batch $bs --cuda-graph --timing-cache $c --profile > $OUT/profile/resnet50_fp16_b${bs}_profile.log 2>&1
done
grep -E "ConvPool|GlobalAverage|Gemm|KilnToRowMajor" $OUT/profile/*.log
echo "benches done $SECONDS s"
timeout 170 python3 bench/pytorch_baseline.py --out $OUT/bench/pytorch.jsonl --cases bert:128,bert:1,resnet50:1,resnet50:256,resnet18:256 > $OUT/bench/pytorch.log 2>&1
python3 bench/compare_table.py $OUT/bench | tee $OUT/compare.md
echo "pytorch done $SECONDS s"
timeout 60 ncu -k regex:ConvPool -c 1 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats .gpu/bin/kiln bench $m/resnet50.onnx --fp16 --batch 256 --cuda-graph --timing-cache $c --iterations 2 > $OUT/profile/ncu_convpool_b256.txt 2>&1
timeout 60 ncu -k regex:LayerNormWarp -c 1 --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis --section WarpStateStats .gpu/bin/kiln bench $m/bert.onnx --fp16 --shapes input_ids=128x128 --shapes attention_mask=128x128 --cuda-graph --timing-cache $c --iterations 2 > $OUT/profile/ncu_layernorm_b128.txt 2>&1
grep -E "Duration|Throughput|Achieved Occupancy|Registers|Theoretical Occ" $OUT/profile/ncu_*.txt | head -30
echo "ncu done $SECONDS s"
left=$((560 - SECONDS))
if [ $left -gt 60 ]; then
  timeout $left .gpu/bin/kiln_conformance --backend gpu --data-dir "$KILN_ONNX_TESTDATA" --jobs 12 --timeout 120 \
    --expectations tests/conformance/expectations.txt --expectations tests/conformance/expectations_gpu.txt > $OUT/conformance_gpu.log 2>&1
  echo "conformance exit $?"; grep -E "FAILED|passed, " $OUT/conformance_gpu.log | head -20
fi
tar -cf $OUT/bench.tar -C $OUT bench profile && rm -rf $OUT/bench $OUT/profile
echo "elapsed $SECONDS s"
