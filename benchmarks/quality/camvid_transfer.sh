#!/usr/bin/env bash
# CamVid's in-domain transfer, as RESULTS.md's commands name it: dense_transfer.sh segment.
#   benchmarks/quality/camvid_transfer.sh RUN [SEEDS] [FRACTIONS] [KEY=VALUE ...]
exec "$(dirname "$0")/dense_transfer.sh" segment "$@"
