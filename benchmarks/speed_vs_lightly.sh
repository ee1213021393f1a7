#!/usr/bin/env bash
# Training speed of configs/cifar10_cpu.yaml: byol-keras against the lightly replica in
# ../shared/bench, alternating ROUNDS times, STEPS steps each (first step left out by both).
# Run it alone on the machine: torch's threads stall when another process takes a core.
#
#   benchmarks/speed_vs_lightly.sh [STEPS (default 300)] [ROUNDS (default 2)] [OUT (default runs/speed)]
set -euo pipefail
steps=${1:-300}
rounds=${2:-2}
out=${3:-runs/speed}
# shellcheck source=benchmarks/peer_env.sh
source "$(dirname "$0")/peer_env.sh"
mkdir -p "$out"
for round in $(seq "$rounds"); do
  rm -rf "$out/byol-keras-$round"
  python -m byol_keras train --config configs/cifar10_cpu.yaml --output "$out/byol-keras-$round" \
    --set data.source="folder:$cifar" data.val_source=null eval.knn_every_epochs=0 \
    train.epochs=1 train.steps_per_epoch="$steps" train.verbose=0 >/dev/null
  python -c "import json, sys; s = json.load(open(sys.argv[1]))
print(f'byol-keras img_per_s={s[\"images_per_second\"]:.1f}')" "$out/byol-keras-$round/summary.json"
  "$PEER_PY" "$shared/bench/lightly_cifar_knn.py" --data "$cifar" --epochs 5 --seed 0 \
    --max-steps "$steps" --knn-subset 500 | tail -n 1
done
