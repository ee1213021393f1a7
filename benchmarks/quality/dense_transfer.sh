#!/usr/bin/env bash
# In-domain dense transfer (benchmarks/RESULTS.md, "Transfer to segmentation" and "Transfer to
# detection"): BYOL with the task's shipped config (plus any pretraining overrides), then the
# task's protocol from the pretrained backbone and from random init, for each fine-tuning seed
# and label fraction; prints one row per pair of fine-tunes and the mean gains.
#   segment: CamVid, configs/camvid_cpu.yaml, test mean IoU
#   detect:  BCCD, configs/bccd_cpu.yaml, test AP50
# CONFIG=configs/camvid_tiny_cpu.yaml (say) pretrains with another config of the task.
# A run directory that already holds a finished pretraining is reused, and a fine-tune whose
# result file exists is not repeated, so the script can be stopped and started again.
#
#   benchmarks/quality/dense_transfer.sh TASK RUN [SEEDS (default "1 2")] [FRACTIONS (default "0.1 1.0")] [KEY=VALUE ...]
#
# KEY=VALUE overrides the config of the pretraining; the run's config.yaml carries them (a
# task key such as detect.norm=none included) to the fine-tunes, e.g.
#   benchmarks/quality/dense_transfer.sh detect runs/bccd_128 "1 2" 0.1 data.image_size=128
# The data is read from /tmp/camvid or /tmp/bccd (CAMVID_DIR, BCCD_DIR), unpacked from
# ../shared/data (DATA_DIR) when missing.
set -euo pipefail
command="$0 $*"
usage="usage: dense_transfer.sh segment|detect RUN [SEEDS] [FRACTIONS] [KEY=VALUE ...]"
task=${1:?$usage}
run=${2:?$usage}
seeds=${3:-1 2}
fractions=${4:-0.1 1.0}
shift $(( $# < 4 ? $# : 4 ))
data=${DATA_DIR:-../shared/data}
case $task in
  segment) name=camvid; archive=camvid-jpeg.tar.gz; folder=${CAMVID_DIR:-/tmp/camvid}
           source_spec="segfolder:$folder/camvid"; probe=camvid/train; score=mean_iou
           module=segmentation ;;
  detect)  name=bccd; archive=bccd-voc.tar.gz; folder=${BCCD_DIR:-/tmp/bccd}
           source_spec="voc:$folder/bccd"; probe=bccd/JPEGImages; score=ap50
           module=detection ;;
  *) echo "dense_transfer.sh: TASK must be segment or detect, got '$task'" >&2; exit 2 ;;
esac
byol=(python -m byol_keras)

if [[ ! -d $folder/$probe ]]; then
  if [[ ! -f $data/$archive ]]; then
    echo "dense_transfer.sh: needs $data/$archive (or ${name^^}_DIR); not found" >&2
    exit 2
  fi
  mkdir -p "$folder" && tar -xzf "$data/$archive" -C "$folder"
fi

overrides=(data.source="$source_spec")
(( $# )) && overrides+=("$@")
if [[ ! -f $run/summary.json ]]; then
  "${byol[@]}" train --config "${CONFIG:-configs/${name}_cpu.yaml}" --output "$run" --set "${overrides[@]}"
fi

for seed in $seeds; do
  for fraction in $fractions; do
    for baseline in "" random; do
      result=$(python -c "from byol_keras.transfer.$module.protocol import result_name
print(result_name(float('$fraction'), '$baseline' or None, $seed))")
      [[ -f $run/eval/$result.json ]] && continue
      "${byol[@]}" evaluate --run "$run" --protocol "$task" --data "$source_spec" \
        --label-fraction "$fraction" --set "$task.seed=$seed" ${baseline:+--baseline $baseline}
    done
  done
done

summary=$(python - "$run" "$task" "$score" "$name" <<'EOF'
import json, pathlib, statistics, sys
run, task, score, name = pathlib.Path(sys.argv[1]), *sys.argv[2:]
summary = json.loads((run / "summary.json").read_text())
print(f"pretraining: {summary['steps']} steps, {summary['wall_time_seconds']:.0f} s, "
      f"final loss {summary['final_loss']:.3f}, collapse {summary['final_collapse']:.3f}")
rows = {}
for path in sorted((run / "eval").glob(f"{task}*-seed*.json")):
    result = json.loads(path.read_text())
    params = result["parameters"]
    rows.setdefault((params["label_fraction"], params["seed"]), {})[result["backbone"]] = result
print(f"labels  seed  pretrained  random  gain  ({score}; seconds pre / rand)")
gains = {}
for (fraction, seed), pair in sorted(rows.items()):
    if len(pair) < 2:
        continue
    pre, rand = pair["pretrained"], pair["random_init"]
    gain = 100 * (pre[score] - rand[score])
    gains.setdefault(fraction, []).append(gain)
    print(f"{fraction:>6}  {seed:>4}  {100 * pre[score]:9.2f}%  {100 * rand[score]:5.2f}%"
          f"  {gain:+5.2f}  ({pre['wall_time_seconds']:.0f} / {rand['wall_time_seconds']:.0f})")
for fraction, values in sorted(gains.items()):
    print(f"mean gain at {fraction:g}: {statistics.mean(values):+.2f} over {len(values)} seed(s)")
    print(f"figure {name}.{score}_gain_{round(100 * fraction)}pct={statistics.mean(values):.2f}")
EOF
)
grep -v '^figure ' <<<"$summary"
record=()
while read -r _ figure; do record+=(--figure "$figure"); done < <(grep '^figure ' <<<"$summary")
python "$(dirname "$0")/../harness.py" "${name}_transfer" --command "$command" "${record[@]}" \
  ${BENCH_RECORD:+--record "$BENCH_RECORD"}
