#!/usr/bin/env bash
# The recipe varied: configs/cifar10_cpu.yaml with one key changed, trained by byol-keras
# and by the lightly replica in ../shared/bench, seed after seed, each followed by the same
# full-bank kNN as benchmarks/quality/quality_vs_lightly.sh. Every variant runs EPOCHS
# epochs; "default" is the recipe itself at that budget. The kNN figures also go to a JSON
# record (benchmarks/harness.py; path in $BENCH_RECORD, if set).
#
#   benchmarks/quality/quality_variations.sh EPOCHS "SEEDS" OUT VARIANT...
#   VARIANT: default | batch128 | tau0.99 | crop0.08
# Extra peer flags (e.g. --threads 1 when the machine is shared) go in PEER_FLAGS.
set -euo pipefail
command="$0 $*"
if (( $# < 4 )); then
  echo "usage: $0 EPOCHS \"SEEDS\" OUT VARIANT... (default, batch128, tau0.99, crop0.08)" >&2
  exit 2
fi
epochs=$1
seeds=$2
out=$3
shift 3
# shellcheck source=benchmarks/peer_env.sh
source "$(dirname "$0")/../peer_env.sh"
mkdir -p "$out"
figures=()
for variant in "$@"; do
  case $variant in
    default) ours=(); peer=() ;;
    batch128) ours=(--set train.batch_size=128); peer=(--recipe batch_size=128) ;;
    tau0.99) ours=(--set model.tau_base=0.99); peer=(--recipe tau_base=0.99) ;;
    crop0.08) ours=(--set "augment.crop_area=[0.08,1.0]"); peer=(--recipe crop_area_min=0.08) ;;
    *) echo "unknown variant: $variant (default, batch128, tau0.99, crop0.08)" >&2; exit 2 ;;
  esac
  for seed in $seeds; do
    run="$out/$variant-e$epochs-byol-keras-seed$seed"
    if [[ ! -f $run.knn.txt ]]; then
      rm -rf "$run"
      python -m byol_keras train --config configs/cifar10_cpu.yaml --output "$run" \
        --set data.source="folder:$cifar" --set data.val_source="folder:$cifar" \
        --set train.seed="$seed" --set train.epochs="$epochs" --set eval.knn_every_epochs=0 \
        "${ours[@]}" > "$run.train.log" 2>&1
      python -m byol_keras evaluate --run "$run" --protocol knn > "$run.knn.tmp"
      mv "$run.knn.tmp" "$run.knn.txt"
    fi
    tail -n 1 "$run.knn.txt"
    log="$out/$variant-e$epochs-lightly-seed$seed.log"
    if ! grep -q "knn_top1=" "$log" 2>/dev/null; then
      # shellcheck disable=SC2086
      "$PEER_PY" "$shared/bench/lightly_cifar_knn.py" --data "$cifar" --epochs "$epochs" \
        --seed "$seed" "${peer[@]}" ${PEER_FLAGS:-} > "$log" 2>&1
    fi
    tail -n 1 "$log"
    top1=$(python -c "import json, sys; print(100 * json.load(open(sys.argv[1]))['top1'])" \
      "$run/eval/knn.json")
    figures+=(--figure "$variant.seed$seed.byol_keras_knn_top1=$top1"
              --figure "$variant.seed$seed.lightly_knn_top1=$(tail -n 1 "$log" |
                sed -n 's/.*knn_top1=\([0-9.]*\).*/\1/p')")
  done
done
python "$bench/harness.py" quality_variations --command "$command" "${figures[@]}" \
  ${BENCH_RECORD:+--record "$BENCH_RECORD"}
