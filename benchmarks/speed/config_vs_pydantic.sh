#!/usr/bin/env bash
# Issue 31 item 5: what pydantic v2 would cost the CLI's start-up against our schema.py.
# Each side in a fresh process, alternating: pydantic's import plus one model with
# extra="forbid" and a range, against `import byol_keras.config` plus loading the defaults
# (the whole validated config). PYDANTIC_PY is a Python with pydantic installed
# (python3 -m venv /tmp/pyd && /tmp/pyd/bin/pip install pydantic).
#
#   PYDANTIC_PY=/tmp/pyd/bin/python benchmarks/speed/config_vs_pydantic.sh [ROUNDS (default 5)]
set -euo pipefail
rounds=${1:-5}
ours=${PYTHON:-.venv/bin/python}
theirs=${PYDANTIC_PY:?set PYDANTIC_PY to a Python with pydantic installed}
for _ in $(seq "$rounds"); do
  "$theirs" -c "
import time; t = time.perf_counter()
from pydantic import BaseModel, ConfigDict, Field
class Section(BaseModel):
    model_config = ConfigDict(extra='forbid')
    epochs: int = Field(3, ge=1)
Section(epochs=4)
print(f'pydantic {1000 * (time.perf_counter() - t):.1f} ms')"
  "$ours" -c "
import time; t = time.perf_counter()
import byol_keras.config
byol_keras.config.load_config()
print(f'byol_keras.config {1000 * (time.perf_counter() - t):.1f} ms')"
done
