#!/usr/bin/env bash
# Training speed of configs/cifar10_cpu.yaml: byol-keras against the lightly replica in
# ../shared/bench, alternating ROUNDS times, STEPS steps each (first step left out by both).
# Run it alone on the machine: torch's threads stall when another process takes a core.
# The figures also go to a JSON record (benchmarks/harness.py; path in $BENCH_RECORD, if set).
#
#   benchmarks/speed/speed_vs_lightly.sh [STEPS (default 300)] [ROUNDS (default 2)] [OUT (default runs/speed)]
set -euo pipefail
command="$0 $*"
steps=${1:-300}
rounds=${2:-2}
out=${3:-runs/speed}
# shellcheck source=benchmarks/peer_env.sh
source "$(dirname "$0")/../peer_env.sh"
mkdir -p "$out"
figures=()
for round in $(seq "$rounds"); do
  rm -rf "$out/byol-keras-$round"
  python -m byol_keras train --config configs/cifar10_cpu.yaml --output "$out/byol-keras-$round" \
    --set data.source="folder:$cifar" data.val_source=null eval.knn_every_epochs=0 \
    train.epochs=1 train.steps_per_epoch="$steps" train.verbose=0 >/dev/null
  ours=$(python -c "import json, sys; s = json.load(open(sys.argv[1]))
print(f'{s[\"images_per_second\"]:.1f}')" "$out/byol-keras-$round/summary.json")
  echo "byol-keras img_per_s=$ours"
  peer=$("$PEER_PY" "$shared/bench/lightly_cifar_knn.py" --data "$cifar" --epochs 5 --seed 0 \
    --max-steps "$steps" --knn-subset 500 | tail -n 1)
  echo "$peer"
  figures+=(--figure "round$round.byol_keras_img_per_s=$ours"
            --figure "round$round.lightly_img_per_s=$(sed -n 's/.*img_per_s=\([0-9.]*\).*/\1/p' <<<"$peer")")
done
python "$bench/harness.py" speed_vs_lightly --command "$command" "${figures[@]}" \
  ${BENCH_RECORD:+--record "$BENCH_RECORD"}
