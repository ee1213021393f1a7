"""The parity check of an export: which images to run, what the Keras model says, pass or fail.

The exporting process builds the input sets and the Keras references here;
`verify.py` runs the written artifacts on the same inputs in a fresh
process and applies the tolerance.

```python
# doctest: slow
from byol_keras.export.signature import write_saved_model
from byol_keras.runs import RunDirectory, load_networks

run = RunDirectory("runs/quickstart")
backbone, projector = load_networks(run)
config = load_config(run.config_path)
write_saved_model(backbone, projector, EvalTransform.from_config(config), "saved_model")
artifacts = {"saved_model": "saved_model"}  # or {"onnx": "model.onnx"}, ...
verification = verify_artifacts(config, artifacts, backbone, projector, Path("."))
verification["saved_model"]["random"]["embeddings"]["max_abs_diff"]  # e.g. 3e-06
```
"""

import json
import logging
from pathlib import Path

import keras
import numpy as np

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.config import Config
from byol_keras.errors import ExportVerificationError, UsageError
from byol_keras.export import signature as serving
from byol_keras.export.verify import (
    TOLERANCE_RULE,
    compare,
    failures,
    run_in_fresh_process,
)

log = logging.getLogger(__name__)

REAL_IMAGES = 16


def verify_artifacts(
    config: Config,
    artifacts: dict[str, Path],
    backbone: keras.Model,
    projector: keras.Model | None,
    workdir: Path,
) -> dict:
    """Checks every artifact against the Keras networks; returns the manifest's `verification`.

    Raises `ExportVerificationError` naming every failed check.
    """
    inputs, input_sets = verification_inputs(config)
    references = reference_outputs(inputs, backbone, projector, EvalTransform.from_config(config))
    outputs, report = run_in_fresh_process(inputs, artifacts, workdir)
    checks = {kind: compare(outputs.get(kind, {}), references) for kind in artifacts}
    problems = failures(checks)
    expected = serving.contract(backbone, projector, config.data.image_size)
    for kind, contract in report["contracts"].items():
        if contract != expected:
            problems.append(f"{kind}: contract {json.dumps(contract)} != {json.dumps(expected)}")
    if problems:
        raise ExportVerificationError(f"{len(problems)} check(s) failed: {'; '.join(problems)}")
    return {
        "passed": True,
        "tolerance": TOLERANCE_RULE,
        "process": {"pid": report["pid"], "versions": report["versions"]},
        "input_sets": input_sets,
        **checks,
    }


def verification_inputs(config: Config, seed: int = 0) -> tuple[dict, dict]:
    """Input sets for the parity check: real images from the run's data and random ones.

    Returns (name → uint8 array [n, h, w, 3], name → description). Random
    images come at the training size and at two other sizes, one larger and
    non-square, one smaller, so that the resize inside the artifacts is tested.

    ```python
    inputs, sets = verification_inputs(load_config("runs/quickstart/config.yaml"))
    assert inputs["random_large"].shape == (4, 35, 25, 3)  # for 16 px training images
    ```
    """
    size = config.data.image_size
    rng = np.random.default_rng(seed)
    inputs, sets = {}, {}
    real, description = _real_images(config)
    if real is not None:
        inputs["real"], sets["real"] = real, description
        # Real content at another, non-square size: a 2x3 mosaic of each image.
        inputs["real_tiled"] = np.tile(real, (1, 2, 3, 1))
        sets["real_tiled"] = f"{description}, tiled 2x3 to {2 * size}x{3 * size}"
    else:
        sets["real"] = f"skipped: {description}"
    for set_name, shape in (
        ("random", (8, size, size)),
        ("random_large", (4, 2 * size + 3, size + size // 2 + 1)),
        ("random_small", (4, size // 2 + 1, size - 3)),
    ):
        inputs[set_name] = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        sets[set_name] = f"uniform random uint8, {shape[1]}x{shape[2]}"
    return inputs, {
        k: {"description": v, "shape": list(inputs[k].shape) if k in inputs else None}
        for k, v in sets.items()
    }


def _real_images(config: Config) -> tuple[np.ndarray | None, str]:
    """Up to REAL_IMAGES images of the training source, else of the validation source."""
    from byol_keras.data import source_from_config

    data = config.data
    candidates = [(data.source, data.split)]
    if data.val_source:
        candidates.append((data.val_source, data.val_split))
    reasons = []
    for spec, split in candidates:
        try:
            source = source_from_config(config, spec, split)
            images = _first_of_one_size(source.dataset, REAL_IMAGES)
        except UsageError as error:
            reasons.append(str(error))
            continue
        if images:
            height, width = images[0].shape[:2]
            description = f"{spec} split {split}, first {len(images)} of {height}x{width}"
            return np.stack(images).astype(np.uint8), description
        reasons.append(f"{spec} split {split} has no images")
    log.warning("parity check without real images: %s", "; ".join(reasons))
    return None, "; ".join(reasons)


def _first_of_one_size(dataset, count: int) -> list[np.ndarray]:
    """Up to `count` images of the first image's size (photos of other sizes are passed over).

    One input set is one array; a source of photos at their own sizes gives
    its most common size, real photos that the artifacts crop and resize.
    """
    images = []
    for image, _ in dataset.take(8 * count):
        if images and image.shape != images[0].shape:
            continue
        images.append(image.numpy())
        if len(images) == count:
            break
    return images


def reference_outputs(inputs: dict, backbone, projector, transform: EvalTransform) -> dict:
    """The Keras networks' outputs on the same transformed inputs: what artifacts must match.

    ```python
    from byol_keras.runs import RunDirectory, load_networks

    inputs, _ = verification_inputs(load_config("runs/quickstart/config.yaml"))
    backbone, projector = load_networks(RunDirectory("runs/quickstart"))
    references = reference_outputs(inputs, backbone, projector, EvalTransform(16))
    assert references["random"]["embeddings"].shape == (8, 16)  # (8, D)
    ```
    """
    references = {}
    for set_name, images in inputs.items():
        pixels = serving.preprocess(images, transform)
        embeddings = np.asarray(backbone(pixels, training=False), dtype=np.float32)
        references[set_name] = {serving.EMBEDDINGS: embeddings}
        if projector is not None:
            projections = projector(embeddings, training=False)
            references[set_name][serving.PROJECTIONS] = np.asarray(projections, np.float32)
    return references
