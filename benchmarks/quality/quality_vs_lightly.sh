#!/usr/bin/env bash
# The CIFAR-10 quality comparison of benchmarks/RESULTS.md ("Representation quality"):
# configs/cifar10_cpu.yaml trained by byol-keras and by the lightly replica in
# ../shared/bench, one seed after the other, each followed by the same full-bank kNN
# (k=200, T=0.1, 50,000 train images, 10,000 test queries). Run it alone on the machine:
# about 15 minutes per run and library on 2 idle cores. The kNN figures also go to a JSON
# record (benchmarks/harness.py; path in $BENCH_RECORD, if set).
#
#   benchmarks/quality/quality_vs_lightly.sh "0 1 2" [OUT (default runs/quality)] [--set KEY=VALUE ...]
set -euo pipefail
command="$0 $*"
seeds=${1:-"0 1 2"}
out=${2:-runs/quality}
shift $(( $# > 2 ? 2 : $# ))
# shellcheck source=benchmarks/peer_env.sh
source "$(dirname "$0")/../peer_env.sh"
mkdir -p "$out"
figures=()
for seed in $seeds; do
  python -m byol_keras train --config configs/cifar10_cpu.yaml --output "$out/byol-keras-seed$seed" \
    --set data.source="folder:$cifar" --set data.val_source="folder:$cifar" \
    --set train.seed="$seed" "$@"
  python -m byol_keras evaluate --run "$out/byol-keras-seed$seed" --protocol knn |
    tee "$out/byol-keras-seed$seed.knn.txt"
  "$PEER_PY" "$shared/bench/lightly_cifar_knn.py" --data "$cifar" --epochs 5 --seed "$seed" |
    tee "$out/lightly-seed$seed.log"
  ours=$(python -c "import json, sys; print(100 * json.load(open(sys.argv[1]))['top1'])" \
    "$out/byol-keras-seed$seed/eval/knn.json")
  peer=$(tail -n 1 "$out/lightly-seed$seed.log" | sed -n 's/.*knn_top1=\([0-9.]*\).*/\1/p')
  figures+=(--figure "seed$seed.byol_keras_knn_top1=$ours" --figure "seed$seed.lightly_knn_top1=$peer")
done
python "$bench/harness.py" quality_vs_lightly --command "$command" "${figures[@]}" \
  ${BENCH_RECORD:+--record "$BENCH_RECORD"}
