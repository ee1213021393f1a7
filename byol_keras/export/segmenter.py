"""Exports a run's fine-tuned segmenter on the backbone export's contract, layout and checks.

The segmenter is the one `evaluate --protocol segment` kept
(`<run>/eval/<name>/model.keras`, `name` default `segment`). Every artifact
computes `segmenter_outputs`:

    images  uint8   [batch, height, width, 3]   RGB, any height and width
      → cast to float32, divide by 255
      → bilinear resize to segment.image_size          (half-pixel centres, no antialiasing)
      → segmenter (backbone pyramid + FPN head) → logits
      → bilinear resize of the logits to height x width
    classes        int32    [batch, height, width]            arg-max class per pixel
    probabilities  float32  [batch, height, width, classes]   softmax of the logits

The SavedModel and ONNX files are staged, reloaded in a fresh process on real
test images at their own size and at a second size, and on random images,
compared with the Keras segmenter, and only then moved into place (`run.py`).

```python
# doctest: slow
from byol_keras.evaluation import evaluate_run

tiny = ["segment.epochs=1", "segment.image_size=[24, 32]", "segment.decoder_channels=8"]
evaluate_run("runs/quickstart", "segment", "segfolder:camvid", 0.5, overrides=tiny)
name = "segment-50pct@segfolder_camvid"  # the result evaluate_run wrote
manifest = export_run("runs/quickstart", model="segmenter", segmenter=name)
```
"""

import json
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from byol_keras.errors import ExportVerificationError
from byol_keras.export import signature as serving
from byol_keras.export.publish import ExportRequest, described_contract, publish
from byol_keras.export.verify import (
    RELATIVE_TOLERANCE,
    TOLERANCE_RULE,
    compare,
    failures,
    run_in_fresh_process,
    tolerance,
)
from byol_keras.nn.precision import compute_dtypes, float32_copy
from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory
from byol_keras.transfer.segfolder import segmentation_input
from byol_keras.transfer.segment import result_test_split

log = logging.getLogger(__name__)

CLASSES = "classes"
PROBABILITIES = "probabilities"
REAL_IMAGES = 4


def segmenter_outputs(images, segmenter: keras.Model, size: tuple) -> dict:
    """The exported function: per-pixel classes and probabilities at the input's size."""
    images = tf.ensure_shape(images, [None, None, None, 3])
    logits = tf.cast(segmenter(segmentation_input(images, size), training=False), tf.float32)
    logits = tf.image.resize(logits, tf.shape(images)[1:3], method="bilinear")
    return {
        CLASSES: tf.argmax(logits, axis=-1, output_type=tf.int32),
        PROBABILITIES: tf.nn.softmax(logits, axis=-1),
    }


def write_saved_model(segmenter: keras.Model, size: tuple, path: Path) -> None:
    """Writes a SavedModel whose `serving_default` signature is `segmenter_outputs`."""
    serving.write_endpoint(
        [segmenter], lambda images: segmenter_outputs(images, segmenter, size), path
    )


def contract(num_classes: int) -> dict:
    """Input and output names, dtypes and shapes that every artifact must show."""
    return {
        "inputs": {serving.INPUT_NAME: {"dtype": "uint8", "shape": [None, None, None, 3]}},
        "outputs": {
            CLASSES: {"dtype": "int32", "shape": [None, None, None]},
            PROBABILITIES: {"dtype": "float32", "shape": [None, None, None, num_classes]},
        },
    }


def export_segmenter(
    run: RunDirectory, request: ExportRequest, result: dict, model_path: Path
) -> dict:
    """Publishes the segmenter kept at `model_path`, whose evaluation wrote `result`.

    Called by `run.export_run` with a checked request and the result found by
    `RunDirectory.find_result`.
    """
    size = tuple(result["parameters"]["image_size"])
    num_classes = result["num_classes"]
    segmenter = load_model(model_path, compile=False)
    if compute_dtypes(segmenter) != {"float32"}:
        segmenter = float32_copy(segmenter)

    def write(path: Path) -> None:
        write_saved_model(segmenter, size, path)

    def check(staged: dict, workdir: Path) -> dict:
        return verify(result, staged, segmenter, size, num_classes, workdir)

    meanings = {
        serving.INPUT_NAME: "RGB pixels 0..255, any height and width",
        CLASSES: "class index per pixel (arg-max), at the input size",
        PROBABILITIES: "class probabilities per pixel (softmax), at the input size",
    }
    expected = contract(num_classes)
    description = {
        "model": "segmenter",
        "segmenter": {
            "result": model_path.parent.name,
            "backbone": result["backbone"],
            "test_mean_iou": result["mean_iou"],
            "class_names": result["class_names"],
            "ignore_index": result["ignore_index"],
        },
        **described_contract(expected, meanings),
        "preprocessing": f"cast to float32, divide by 255, bilinear resize (half-pixel centres, "
        f"no antialiasing) to {size[0]}x{size[1]}; logits resized bilinearly to the input size",
        "image_size": list(size),
        "tolerance": {"rule": TOLERANCE_RULE, "relative": RELATIVE_TOLERANCE},
    }
    return publish(request, run, write, check, description)


def verification_inputs(result: dict, size: tuple, seed: int = 0) -> tuple[dict, dict]:
    """Real test images at their own size and at a second, odd size; random ones at three sizes."""
    inputs, sets = {}, {}
    try:
        test = result_test_split(result, size)
        names = test.names[:REAL_IMAGES]
    except Exception as error:  # the data may be gone since the evaluation: random images only
        names, reason = [], str(error)
    if names:
        from byol_keras.data.folder import pillow_decode

        images = [pillow_decode(name) for name in names]
        same = [image for image in images if image.shape == images[0].shape]
        height, width = same[0].shape[:2]
        inputs["real"] = np.stack(same)
        sets["real"] = f"{result['data']} {result['splits']['test']}, first {len(same)}"
        other = (height * 2 // 3 + 1, width * 3 // 4 + 1)
        inputs["real_resized"] = np.stack(
            [np.asarray(Image.fromarray(i).resize(other[::-1], Image.BILINEAR)) for i in same]
        )
        sets["real_resized"] = f"the same, resized to {other[0]}x{other[1]}"
    else:
        sets["real"] = f"skipped: {reason}"
        log.warning("segmenter parity check without real images: %s", reason)
    rng = np.random.default_rng(seed)
    for set_name, shape in (
        ("random", (2, *size)),
        ("random_large", (2, 2 * size[0] + 3, size[1] + size[1] // 2 + 1)),
        ("random_small", (2, size[0] // 2 + 1, size[1] - 3)),
    ):
        inputs[set_name] = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        sets[set_name] = f"uniform random uint8, {shape[1]}x{shape[2]}"
    return inputs, {
        k: {"description": v, "shape": list(inputs[k].shape) if k in inputs else None}
        for k, v in sets.items()
    }


def verify(result, artifacts, segmenter, size, num_classes, workdir) -> dict:
    """Runs the artifacts in a fresh process and compares them with the Keras segmenter.

    Probabilities must agree within the tolerance; class indices must be
    equal wherever Keras's two most probable classes differ by more than twice
    the tolerance (a nearer tie may rightly go either way).
    """
    inputs, input_sets = verification_inputs(result, size)
    references = {}
    for set_name, images in inputs.items():
        outputs = segmenter_outputs(tf.constant(images), segmenter, size)
        references[set_name] = {k: np.asarray(v) for k, v in outputs.items()}
    outputs, report = run_in_fresh_process(inputs, artifacts, workdir)
    checks = {}
    for kind in artifacts:
        produced = outputs.get(kind, {})
        probabilities = {s: {PROBABILITIES: r[PROBABILITIES]} for s, r in references.items()}
        checks[kind] = compare(produced, probabilities)
        for set_name, reference in references.items():
            actual = produced.get(set_name, {}).get(CLASSES)
            checks[kind][set_name][CLASSES] = _classes_check(actual, reference)
    problems = failures(checks)
    for kind, found in report["contracts"].items():
        if found != contract(num_classes):
            problems.append(f"{kind}: contract {json.dumps(found)} != {contract(num_classes)}")
    if problems:
        raise ExportVerificationError(f"{len(problems)} check(s) failed: {'; '.join(problems)}")
    return {
        "passed": True,
        "tolerance": TOLERANCE_RULE,
        "classes_rule": "equal wherever Keras's top-2 probabilities differ by > 2 x tolerance",
        "process": {"pid": report["pid"], "versions": report["versions"]},
        "input_sets": input_sets,
        **checks,
    }


def _classes_check(actual, reference: dict) -> dict:
    """Class indices against Keras's: a pixel may differ only where Keras's top two nearly tie.

    The record counts pixels; it has no `max_abs_diff`, since a difference
    between two class indices is no measure of how far apart they are.
    """
    expected, probabilities = reference[CLASSES], reference[PROBABILITIES]
    margin = 2 * tolerance(probabilities)
    check = {"margin": margin}
    if actual is None or actual.shape != expected.shape:
        shape = None if actual is None else list(actual.shape)
        return {**check, "passed": False, "error": f"shape {shape}"}
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    differ = actual != expected
    clear = differ & (top2[..., 1] - top2[..., 0] > margin)
    check.update(
        pixels=int(expected.size),
        differing_pixels=int(differ.sum()),
        clear_mismatches=int(clear.sum()),
        passed=not clear.any(),
    )
    if clear.any():
        check["error"] = f"{int(clear.sum())} pixels with a clear arg-max got another class"
    return check
