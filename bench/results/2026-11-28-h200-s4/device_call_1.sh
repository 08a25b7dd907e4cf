#!/usr/bin/env bash
# First call on a new machine kind: facts, libraries, a GPU test subset, b1 latency vs torch.compile.
set -uo pipefail
export PYTHONUNBUFFERED=1
{ nvidia-smi; uname -a; nproc; free -g; df -h /dev/shm; which python3; python3 --version;
  ldconfig -p | grep -E "cudnn|cublas" | head; ls /usr/local/cuda*/ -d; } > $OUT/facts.txt 2>&1
KILN_GPU_CHECK=none scripts/gpu-check > $OUT/setup.log 2>&1
source <(grep -A12 '^if \[ -d .gpu/bin \]' scripts/gpu-check | sed -n '2,10p')
echo "LD=$LD_LIBRARY_PATH" >> $OUT/facts.txt
ldd .gpu/bin/kiln | grep -E "not found|cudnn|cublas|cudart" >> $OUT/facts.txt
export KILN_MODELS_DIR=$(pwd)/models
cat $OUT/facts.txt | grep -vE "^\s*$" | head -60
timeout 200 .gpu/bin/kiln_tests --gtest_brief=1 --gtest_filter='GpuBackend*:AttentionGpu*:*Serve*Gpu*:*BackendGpu*' 2>&1 | tail -8
for c in "resnet50.onnx --fp16 --batch 1" "bert.onnx --fp16 --shapes input_ids=1x128 --shapes attention_mask=1x128" "bert.onnx --fp16 --shapes input_ids=128x128 --shapes attention_mask=128x128" "resnet50.onnx --fp16 --batch 256"; do
  timeout 120 .gpu/bin/kiln bench models/$c --cuda-graph 2>&1 | grep -E "latency|throughput|launch" | head -4
done
timeout 420 python3 bench/pytorch_baseline.py --out $OUT/pt.jsonl --cases bert:1,resnet50:1,bert:128 --compile --compile-cases bert:1,resnet50:1 2>&1 | grep -v Warning | tail -20
