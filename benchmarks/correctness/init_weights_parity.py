"""Checks that `model.init_weights` starts a run from another run's backbone, on real images.

Builds the model a `train` of `--config` with `model.init_weights=RUN/backbone.keras`
would build (`builders.build_model`), before any step, and compares its online
and target backbones' features on the run's validation images with the features of
`RUN/backbone.keras` itself. Equal features give an equal linear probe.

```
python benchmarks/correctness/init_weights_parity.py --run runs/mnist --config configs/mnist.yaml \
    --set data.val_source=npz:../shared/data/mnist.npz
```
"""

import argparse
import sys
from pathlib import Path

import keras
import numpy as np

from byol_keras.builders import build_model
from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.data.source import to_unit_range
from byol_keras.evaluation.features import source_arrays

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("init_weights_parity", args.record)

    backbone_path = f"{args.run}/backbone.keras"
    config = load_config(args.config, [*args.overrides, f"model.init_weights={backbone_path}"])
    model = build_model(config, total_steps=1)
    reference = keras.saving.load_model(backbone_path, compile=False)
    source = source_from_config(config, config.data.val_source, config.data.val_split)
    images, _ = source_arrays(source)
    pixels = to_unit_range(images)
    expected = reference.predict(pixels, batch_size=1000, verbose=0)
    differences = {}
    for name, network in (("online", model.online_backbone), ("target", model.target_backbone)):
        found = network.predict(pixels, batch_size=1000, verbose=0)
        differences[f"{name}_max_abs_diff"] = float(np.max(np.abs(found - expected)))
        print(
            f"{name} backbone at step 0 vs {backbone_path}: {len(images)} images, "
            f"max |difference| {differences[f'{name}_max_abs_diff']:.3e}"
        )
    run_record.write(images=len(images), **differences)


if __name__ == "__main__":
    main()
