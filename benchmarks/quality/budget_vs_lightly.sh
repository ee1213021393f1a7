#!/usr/bin/env bash
# The CIFAR-10 recipe within a wall-clock budget, against the lightly replica given the same
# budget on the same machine (issue 30, "the best representation per CPU-minute").
#
# byol-keras trains configs/cifar10_cpu.yaml with `train.time_budget=BUDGET`: it measures its
# own speed and plans its updates so that the schedules end on time. The lightly replica
# (../shared/bench) takes whole epochs only, so it first measures its own speed on 100 steps,
# then trains the most whole epochs that fit the budget at that speed (at least one). Both
# then get the same full-bank kNN (k=200, T=0.1, 50,000 train images, 10,000 test queries).
# Seeds alternate the two libraries. Run it alone on the machine: about (BUDGET + 3 min) per
# run and library.
#
#   benchmarks/quality/budget_vs_lightly.sh "0 1" [BUDGET_SECONDS (default 900)] [OUT (default runs/budget)]
set -euo pipefail
command="$0 $*"
seeds=${1:-"0 1"}
budget_seconds=${2:-900}
out=${3:-runs/budget}
# shellcheck source=benchmarks/peer_env.sh
source "$(dirname "$0")/../peer_env.sh"
mkdir -p "$out"
figures=(--figure "budget_seconds=$budget_seconds")
for seed in $seeds; do
  run="$out/byol-keras-seed$seed"
  python -m byol_keras train --config configs/cifar10_cpu.yaml --output "$run" \
    --set data.source="folder:$cifar" --set data.val_source="folder:$cifar" \
    --set train.seed="$seed" --set train.time_budget="${budget_seconds}s"
  python -m byol_keras evaluate --run "$run" --protocol knn | tee "$run.knn.txt"
  read -r ours wall updates < <(python -c "
import json, sys
run = sys.argv[1]
summary = json.load(open(f'{run}/summary.json'))
knn = json.load(open(f'{run}/eval/knn.json'))
print(100 * knn['top1'], summary['wall_time_seconds'], summary['time_budget']['planned_updates'])
" "$run")

  "$PEER_PY" "$shared/bench/lightly_cifar_knn.py" --data "$cifar" --epochs 1 --max-steps 100 \
    --knn-subset 1000 --seed "$seed" | tee "$out/lightly-probe-seed$seed.log"
  probe=$(tail -n 1 "$out/lightly-probe-seed$seed.log" | sed -n 's/.*img_per_s=\([0-9.]*\).*/\1/p')
  # 781 steps of 64 images per epoch (drop_last), as in the recipe.
  epochs=$(python -c "import sys; print(max(1, int(float(sys.argv[1]) * float(sys.argv[2]) // (781 * 64))))" \
    "$budget_seconds" "$probe")
  "$PEER_PY" "$shared/bench/lightly_cifar_knn.py" --data "$cifar" --epochs "$epochs" --seed "$seed" |
    tee "$out/lightly-seed$seed.log"
  last=$(tail -n 1 "$out/lightly-seed$seed.log")
  peer=$(sed -n 's/.*knn_top1=\([0-9.]*\).*/\1/p' <<<"$last")
  peer_seconds=$(sed -n 's/.*train_seconds=\([0-9.]*\).*/\1/p' <<<"$last")
  figures+=(
    --figure "seed$seed.byol_keras_knn_top1=$ours"
    --figure "seed$seed.byol_keras_wall_seconds=$wall"
    --figure "seed$seed.byol_keras_updates=$updates"
    --figure "seed$seed.lightly_knn_top1=$peer"
    --figure "seed$seed.lightly_probe_img_per_s=$probe"
    --figure "seed$seed.lightly_epochs=$epochs"
    --figure "seed$seed.lightly_train_seconds=$peer_seconds"
  )
done
python "$bench/harness.py" budget_vs_lightly --command "$command" "${figures[@]}" \
  ${BENCH_RECORD:+--record "$BENCH_RECORD"}
