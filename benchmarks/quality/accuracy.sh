#!/usr/bin/env bash
# Reproduces the accuracy figures of benchmarks/RESULTS.md ("Representation quality"): BYOL
# pretraining on MNIST and CIFAR-10 (JPEG copy) on a CPU, then linear probe / kNN of the
# pretrained backbone and of the same architecture untrained. Training on two cores takes
# about 25 to 31 minutes for MNIST and about 17 minutes for CIFAR-10. The top-1 figures
# also go to a JSON record (benchmarks/harness.py; path in $BENCH_RECORD, if set).
#
#   benchmarks/quality/accuracy.sh [mnist|cifar10|all] [DATA_DIR (default ../shared/data)] [RUNS (default runs)]
set -euo pipefail
command="$0 $*"
which=${1:-all}
data=${2:-../shared/data}
runs=${3:-runs}
cifar=${CIFAR_DIR:-/tmp/cifar10-jpeg}
byol=(python -m byol_keras)
top1() { python -c "import json, sys; print(100 * json.load(open(sys.argv[1]))['top1'])" "$1"; }

if [[ $which != mnist && $which != cifar10 && $which != all ]]; then
  echo "accuracy.sh: the first argument is mnist, cifar10 or all; got '$which'" >&2
  exit 2
fi
if [[ $which != cifar10 && ! -f $data/mnist.npz ]]; then
  echo "accuracy.sh: needs $data/mnist.npz (../shared/data, or DATA_DIR); not found" >&2
  exit 2
fi
if [[ $which != mnist && ! -d $cifar/train && ! -f $data/cifar10-jpeg.tar.gz ]]; then
  echo "accuracy.sh: needs $data/cifar10-jpeg.tar.gz (or CIFAR_DIR=a folder with train/); not found" >&2
  exit 2
fi

figures=()
if [[ $which == mnist || $which == all ]]; then
  mnist="npz:$data/mnist.npz"
  time "${byol[@]}" train --config configs/mnist.yaml --output "$runs/mnist" \
    --set data.source="$mnist" --set data.val_source="$mnist"
  "${byol[@]}" evaluate --run "$runs/mnist" --protocol linear
  "${byol[@]}" evaluate --run "$runs/mnist" --protocol linear --baseline random
  figures+=(--figure "mnist.linear_top1=$(top1 "$runs/mnist/eval/linear.json")"
            --figure "mnist.linear_top1_random_init=$(top1 "$runs/mnist/eval/linear-random.json")")
fi

if [[ $which == cifar10 || $which == all ]]; then
  if [[ ! -d $cifar/train ]]; then
    mkdir -p "$cifar" && tar -xzf "$data/cifar10-jpeg.tar.gz" -C "$cifar"
  fi
  time "${byol[@]}" train --config configs/cifar10_cpu.yaml --output "$runs/cifar10_cpu" \
    --set data.source="folder:$cifar" --set data.val_source="folder:$cifar"
  "${byol[@]}" evaluate --run "$runs/cifar10_cpu" --protocol knn
  "${byol[@]}" evaluate --run "$runs/cifar10_cpu" --protocol knn --baseline random
  figures+=(--figure "cifar10.knn_top1=$(top1 "$runs/cifar10_cpu/eval/knn.json")"
            --figure "cifar10.knn_top1_random_init=$(top1 "$runs/cifar10_cpu/eval/knn-random.json")")
fi
python "$(dirname "$0")/../harness.py" accuracy --command "$command" "${figures[@]}" \
  ${BENCH_RECORD:+--record "$BENCH_RECORD"}
