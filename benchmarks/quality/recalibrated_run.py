"""A copy of a finished run whose backbone has the BatchNorm statistics pretraining now ends with.

Runs pretrained before `train.precise_bn_batches` existed saved the moving
averages of training. This writes `OUT/config.yaml`, `OUT/model.keras` and
`OUT/backbone.keras` with the statistics re-estimated by
`recalibrate_batchnorm` on the run's training images, as pretraining's end
does, so that any protocol can score the two side by side:

    python benchmarks/quality/recalibrated_run.py RUN OUT [BATCHES (default 20)]
    byol-keras evaluate --run RUN --protocol knn
    byol-keras evaluate --run OUT --protocol knn
"""

import json
import shutil
import sys
from pathlib import Path

from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.registration import load_model
from byol_keras.training.recalibrate import recalibrate_batchnorm

if __name__ == "__main__":
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    batches = sys.argv[3] if len(sys.argv) > 3 else "20"
    config = load_config(run / "config.yaml", [f"train.precise_bn_batches={batches}"])
    source = source_from_config(config, config.data.source, config.data.split)
    model = load_model(run / "model.keras", compile=False)
    count = recalibrate_batchnorm(config, model.online_backbone, source)
    out.mkdir(parents=True, exist_ok=False)
    shutil.copy(run / "config.yaml", out / "config.yaml")
    model.save(out / "model.keras")
    model.online_backbone.save(out / "backbone.keras")
    summary = json.loads((run / "summary.json").read_text())
    summary.update(precise_bn_batches=count, recalibrated_from=str(run))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{out}: {run}'s backbone, BatchNorm statistics re-estimated on {count} batches")
