#!/usr/bin/env bash
# Issue 23's measurements in one go, for a quiet machine: BYOL.fit against lightly 1.6 at
# ResNet-18 (CIFAR stem, 32 px, batch 128) and ResNet-50 (ImageNet stem, 96 px, batch 32),
# 3 alternating rounds each; the op profile of fit at ResNet-18; then each lever once on
# ResNet-18 against its own same-run default (XLA, steps_per_execution=2, fused EMA: a
# default model in the same process; threads intra 2 / inter 1: process-wide, so read
# against the lightly legs of the same run and section 1's ratio); last, the tiny
# deterministic-loss checks of the levers (lever_parity.py, with its one-ulp control).
# Every timed run writes a harness record to benchmarks/records/; the log goes to
# $OUT/measure-<UTC time>.log (OUT defaults to runs/issue23).
#
#   benchmarks/speed/issue23_measure.sh [ISA]      # e.g. AVX2: caps oneDNN (TF and torch),
#                                                  # torch's ATen and XLA at that ISA
#
# Expected wall time on 2 cores at the AMD VM's 7.7 img/s for ResNet-18 b128 (16.6 s a step
# on either side; ResNet-50 96 px b32 ~5.6 s a step; ~25 s to start TF and build a model):
# R18 7 min, R50 3.5 min, profile 2 min, levers 16 min (XLA 4.5, spe 4, fused EMA 3.7,
# threads 3.9), parity checks 2.5 min: about 31 minutes. RUN_FIT_LOOP=1 adds bench_train.py's
# fit/plain-loop check at R18 b128 (~4 min, 35 in all). SECTIONS="1 3" runs only those
# sections (default: 1 to 6). Set it running alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
isa=${1:-}
out=${OUT:-runs/issue23}
shared=${SHARED_DIR:-$(dirname "$PWD")/shared}
python=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}
if [[ ! -f $shared/bench/lightly_env.sh ]]; then
  echo "issue23_measure.sh: needs $shared/bench/lightly_env.sh (set SHARED_DIR); not found" >&2
  exit 2
fi
if [[ -n $isa ]]; then
  export ONEDNN_MAX_CPU_ISA=$isa
  case ${isa^^} in
    AVX2) export ATEN_CPU_CAPABILITY=avx2 XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_max_isa=AVX2" ;;
    AVX512*) export ATEN_CPU_CAPABILITY=avx512 ;;
    *) export ATEN_CPU_CAPABILITY=default ;;
  esac
fi
mkdir -p "$out"
exec > >(tee "$out/measure-$(date -u +%Y%m%dT%H%M%SZ).log") 2>&1
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
echo "issue23_measure: $(date -u), ISA cap ${isa:-none}, load $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck source=/dev/null
source "$shared/bench/lightly_env.sh"  # $PEER_PY; installs torch + lightly once (minutes)
compare=("$python" benchmarks/speed/fit_vs_lightly_resnet.py)

sections=" ${SECTIONS:-1 2 3 4 5 6} "
section() {
  [[ $sections == *" ${1%%.*} "* ]] || return 1
  echo; echo "== $1 ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
}
r18=(--arch resnet18 --size 32 --batch 128 --steps 2 --rounds 2)
if section "1. ResNet-18 32 px b128, defaults, against lightly"; then
  "${compare[@]}" --arch resnet18 --size 32 --batch 128 --steps 3 --rounds 3 --label r18
fi
if section "2. ResNet-50 96 px b32 (ImageNet stem), defaults, against lightly"; then
  "${compare[@]}" --arch resnet50 --size 96 --batch 32 --steps 3 --rounds 3 --label r50
fi
if section "3. Profile of fit, ResNet-18 32 px b128"; then
  "$python" benchmarks/speed/profile_fit.py --batch 128 --warmup-steps 1 --steps 2 --top 25
fi
if section "4. Levers on ResNet-18 b128, each against a default model in the same process"; then
  "${compare[@]}" "${r18[@]}" --no-peer --paired-default --jit-compile --label xla
  "${compare[@]}" "${r18[@]}" --no-peer --paired-default --steps-per-execution 2 --label spe2
  "${compare[@]}" "${r18[@]}" --no-peer --paired-default --fused-ema --label fused-ema
  # Read inverted: the lever is Keras's BatchNorm ops, the default the fused kernel.
  "${compare[@]}" "${r18[@]}" --no-peer --paired-default --keras-batchnorm --label keras-bn
fi
if section "5. Threads intra 2 / inter 1, against lightly (compare the ratio with section 1's)"; then
  "${compare[@]}" "${r18[@]}" --intra-threads 2 --inter-threads 1 --label threads-2-1
fi
if section "6. Losses with each lever on and off (tiny ResNet-18, deterministic ops, 20 steps)"; then
  for lever in ulp fused-ema fused-batchnorm jit-compile steps-per-execution=2 inter-threads=1; do
    "$python" benchmarks/correctness/lever_parity.py "$lever" || true
  done
fi
if [[ ${RUN_FIT_LOOP:-0} == 1 ]]; then
  sections+="7 "
  section "7. fit / plain loop, ResNet-18 b128"
  "$python" benchmarks/speed/bench_train.py --steps 2 --rounds 2
fi
echo; echo "== done ($(date -u +%H:%M:%S))"
