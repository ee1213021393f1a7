#!/usr/bin/env bash
# Reproduces the accuracy figures of benchmarks/RESULTS.md ("Evaluation"): BYOL pretraining
# on MNIST and CIFAR-10 (JPEG copy) on a CPU, then linear probe / kNN of the pretrained
# backbone and of the same architecture untrained. Training on two cores takes about 25 to 31
# minutes for MNIST and about 17 minutes for CIFAR-10.
#
#   benchmarks/accuracy.sh [mnist|cifar10|all] [DATA_DIR (default ../shared/data)] [RUNS (default runs)]
set -euo pipefail
which=${1:-all}
data=${2:-../shared/data}
runs=${3:-runs}
byol=(python -m byol_keras)

if [[ $which == mnist || $which == all ]]; then
  mnist="npz:$data/mnist.npz"
  time "${byol[@]}" train --config configs/mnist.yaml --output "$runs/mnist" \
    --set data.source="$mnist" --set data.val_source="$mnist"
  "${byol[@]}" evaluate --run "$runs/mnist" --protocol linear
  "${byol[@]}" evaluate --run "$runs/mnist" --protocol linear --baseline random
fi

if [[ $which == cifar10 || $which == all ]]; then
  cifar=${CIFAR_DIR:-/tmp/cifar10-jpeg}
  if [[ ! -d $cifar/train ]]; then
    mkdir -p "$cifar" && tar -xzf "$data/cifar10-jpeg.tar.gz" -C "$cifar"
  fi
  time "${byol[@]}" train --config configs/cifar10_cpu.yaml --output "$runs/cifar10_cpu" \
    --set data.source="folder:$cifar" --set data.val_source="folder:$cifar"
  "${byol[@]}" evaluate --run "$runs/cifar10_cpu" --protocol knn
  "${byol[@]}" evaluate --run "$runs/cifar10_cpu" --protocol knn --baseline random
fi
