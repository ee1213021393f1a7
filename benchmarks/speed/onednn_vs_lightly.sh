#!/usr/bin/env bash
# Training speed with TensorFlow's oneDNN kernels on (the project's default) and off
# (TensorFlow's default on x86 CPUs without AVX-512 VNNI/BF16/AMX), each against lightly 1.6 on
# the same network in the same run: ResNet-18 (CIFAR stem, 32 px, batch 128) and ResNet-50
# (ImageNet stem, 96 px, batch 32), then fit against a plain loop (bench_train.py) both ways.
# Every record names the CPU, its flags and the oneDNN state. Run it alone on the machine.
#
#   source ../shared/bench/lightly_env.sh && benchmarks/speed/onednn_vs_lightly.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
: "${PEER_PY:?source ../shared/bench/lightly_env.sh first (it sets PEER_PY)}"
for arch in "resnet18 32 128" "resnet50 96 32"; do
  read -r name size batch <<<"$arch"
  for onednn in 1 0; do
    echo "== $name ${size}px batch $batch, TF_ENABLE_ONEDNN_OPTS=$onednn"
    "$python" benchmarks/speed/fit_vs_lightly_resnet.py --arch "$name" --size "$size" \
      --batch "$batch" --env "TF_ENABLE_ONEDNN_OPTS=$onednn" --label "onednn$onednn"
  done
done
for onednn in 1 0; do
  echo "== bench_train (fit against a plain loop), TF_ENABLE_ONEDNN_OPTS=$onednn"
  TF_ENABLE_ONEDNN_OPTS=$onednn "$python" benchmarks/speed/bench_train.py
done
