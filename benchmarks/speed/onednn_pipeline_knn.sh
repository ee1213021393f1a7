#!/usr/bin/env bash
# Issue 30: neither the view-pair pipeline nor the kNN monitor may get slower with oneDNN on.
# Each benchmark runs with TF_ENABLE_ONEDNN_OPTS=1 (the project's default) and =0
# (TensorFlow's default without AVX-512 VNNI/BF16/AMX), alternating, ROUNDS times; every
# record names the CPU, its flags and the oneDNN state. Run it alone on the machine.
#
#   benchmarks/speed/onednn_pipeline_knn.sh [ROUNDS (default 2)]
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
rounds=${1:-2}
mnist=${SHARED_DIR:-../shared}/data/mnist.npz
for round in $(seq "$rounds"); do
  for onednn in 1 0; do
    echo "== round $round: bench_pipeline (CIFAR views, 32 px, batch 256), TF_ENABLE_ONEDNN_OPTS=$onednn"
    TF_ENABLE_ONEDNN_OPTS=$onednn "$python" benchmarks/speed/bench_pipeline.py --preset cifar \
      --examples 20000
    echo "== round $round: bench_knn_monitor (MNIST, 3 epochs of 100 steps, kNN after each), TF_ENABLE_ONEDNN_OPTS=$onednn"
    TF_ENABLE_ONEDNN_OPTS=$onednn "$python" benchmarks/speed/bench_knn_monitor.py \
      --config configs/mnist.yaml --set "data.source=npz:$mnist" \
      --set "data.val_source=npz:$mnist" --set train.epochs=3 \
      --set train.steps_per_epoch=100 --repeats 1
  done
done
