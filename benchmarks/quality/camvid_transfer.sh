#!/usr/bin/env bash
# In-domain transfer on CamVid (benchmarks/RESULTS.md, "Transfer to segmentation"): BYOL on
# the 468 train + val frames with configs/camvid_cpu.yaml (plus any pretraining overrides),
# then --protocol segment from the pretrained backbone and from random init, for each
# fine-tuning seed and label fraction; prints one row per fine-tune and the mean gains.
# A run directory that already holds a finished pretraining is reused, and a fine-tune whose
# result file exists is not repeated, so the script can be stopped and started again.
#
#   benchmarks/quality/camvid_transfer.sh RUN [SEEDS (default "1 2")] [FRACTIONS (default "0.1 1.0")] [KEY=VALUE ...]
#
# e.g. benchmarks/quality/camvid_transfer.sh runs/camvid_tau "1" "0.1" model.tau_base=0.9
# The frames are read from /tmp/camvid (CAMVID_DIR), unpacked from ../shared/data
# (DATA_DIR) when missing.
set -euo pipefail
command="$0 $*"
run=${1:?usage: camvid_transfer.sh RUN [SEEDS] [FRACTIONS] [KEY=VALUE ...]}
seeds=${2:-1 2}
fractions=${3:-0.1 1.0}
shift $(( $# < 3 ? $# : 3 ))
data=${DATA_DIR:-../shared/data}
camvid=${CAMVID_DIR:-/tmp/camvid}
byol=(python -m byol_keras)

if [[ ! -d $camvid/camvid/train ]]; then
  if [[ ! -f $data/camvid-jpeg.tar.gz ]]; then
    echo "camvid_transfer.sh: needs $data/camvid-jpeg.tar.gz (or CAMVID_DIR with camvid/train); not found" >&2
    exit 2
  fi
  mkdir -p "$camvid" && tar -xzf "$data/camvid-jpeg.tar.gz" -C "$camvid"
fi
source_spec="segfolder:$camvid/camvid"

if [[ ! -f $run/summary.json ]]; then
  overrides=(data.source="$source_spec")
  (( $# )) && overrides+=("$@")
  "${byol[@]}" train --config configs/camvid_cpu.yaml --output "$run" --set "${overrides[@]}"
fi

for seed in $seeds; do
  for fraction in $fractions; do
    for baseline in "" random; do
      name=$(python -c "from byol_keras.transfer.segmentation.protocol import result_name
print(result_name(float('$fraction'), '$baseline' or None, $seed))")
      [[ -f $run/eval/$name.json ]] && continue
      "${byol[@]}" evaluate --run "$run" --protocol segment --data "$source_spec" \
        --label-fraction "$fraction" --set segment.seed="$seed" ${baseline:+--baseline $baseline}
    done
  done
done

summary=$(python - "$run" <<'EOF'
import json, pathlib, statistics, sys
run = pathlib.Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text())
print(f"pretraining: {summary['steps']} steps, {summary['wall_time_seconds']:.0f} s, "
      f"final loss {summary['final_loss']:.3f}, collapse {summary['final_collapse']:.3f}")
rows = {}
for path in sorted((run / "eval").glob("segment*-seed*.json")):
    result = json.loads(path.read_text())
    params = result["parameters"]
    key = (params["label_fraction"], params["seed"])
    rows.setdefault(key, {})[result["backbone"]] = result
print("labels  seed  pretrained  random  gain  (seconds pre / rand)")
gains = {}
for (fraction, seed), pair in sorted(rows.items()):
    if len(pair) < 2:
        continue
    pre, rand = pair["pretrained"], pair["random_init"]
    gain = 100 * (pre["mean_iou"] - rand["mean_iou"])
    gains.setdefault(fraction, []).append(gain)
    print(f"{fraction:>6}  {seed:>4}  {100 * pre['mean_iou']:9.2f}%  {100 * rand['mean_iou']:5.2f}%"
          f"  {gain:+5.2f}  ({pre['wall_time_seconds']:.0f} / {rand['wall_time_seconds']:.0f})")
for fraction, values in sorted(gains.items()):
    print(f"mean gain at {fraction:g}: {statistics.mean(values):+.2f} over {len(values)} seed(s)")
    print(f"figure camvid.miou_gain_{round(100 * fraction)}pct={statistics.mean(values):.2f}")
EOF
)
grep -v '^figure ' <<<"$summary"
record=()
while read -r _ figure; do record+=(--figure "$figure"); done < <(grep '^figure ' <<<"$summary")
python "$(dirname "$0")/../harness.py" camvid_transfer --command "$command" "${record[@]}" \
  ${BENCH_RECORD:+--record "$BENCH_RECORD"}
