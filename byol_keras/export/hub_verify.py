"""The KerasHub preset's verification worker: loads it as a KerasHub user would, without byol_keras.

Run by path (`hub.py` starts it through `isolated_python`), so that neither
this package nor its registered classes are imported: the preset must load
with keras_hub alone. For each input set (float32 pixels 0..255 at one size)
it applies the preset's image converter, the backbone, and a global average
pooling, and writes the features to `--outputs` as `keras_hub/<set>/features`.
The report records whether anything imported byol_keras.

```
python hub_verify.py --keras-hub export/byol_backbone_keras_hub/1 \
    --inputs in.npz --outputs out.npz --report report.json
```
"""

import argparse
import json
import os
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Runs the preset on every input set; returns 0."""
    parser = argparse.ArgumentParser(prog="hub_verify.py")
    for option in ("--keras-hub", "--inputs", "--outputs", "--report"):
        parser.add_argument(option, required=True)
    args = parser.parse_args(argv)
    import keras
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(args.keras_hub)
    outputs = {}
    with np.load(args.inputs) as arrays:
        for set_name in arrays.files:
            pixels = arrays[set_name]
            converter = keras_hub.layers.ImageConverter.from_preset(
                args.keras_hub, image_size=tuple(pixels.shape[1:3])
            )
            maps = backbone(converter(pixels), training=False)
            features = keras.ops.mean(maps, axis=(1, 2))
            outputs[f"keras_hub/{set_name}/features"] = np.asarray(features, np.float32)
    np.savez(args.outputs, **outputs)
    report = {
        "pid": os.getpid(),
        "backbone_class": type(backbone).__name__,
        "converter_class": type(converter).__name__,
        "imported_byol_keras": any(name.split(".")[0] == "byol_keras" for name in sys.modules),
        "versions": {
            "python": sys.version.split()[0],
            "keras": keras.__version__,
            "keras_hub": keras_hub.__version__,
            "numpy": np.__version__,
        },
    }
    with open(args.report, "w") as stream:
        json.dump(report, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
