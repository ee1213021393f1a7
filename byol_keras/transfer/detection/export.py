"""Exports a run's fine-tuned detector on the backbone export's contract, layout and checks.

The detector is the one `evaluate --protocol detect` kept
(`<run>/eval/<name>/model.keras`, `name` default `detect`). Every artifact
computes `detector_outputs`, non-maximum suppression included:

    images  uint8   [batch, height, width, 3]   RGB, any height and width (one size per batch)
      → cast to float32, divide by 255
      → bilinear resize keeping the aspect ratio to fit detect.image_size, pad bottom/right
      → RetinaNet → per-class non-maximum suppression (IoU 0.5, score >= score_threshold)
      → boxes scaled back to the input's pixels and clipped to it
    boxes           float32  [batch, N, 4]   xyxy in the input's pixels; -1 after num_detections
    scores          float32  [batch, N]      -1 after num_detections
    classes         int32    [batch, N]      class indices; -1 after num_detections
    num_detections  int32    [batch]

N is `detect.max_detections`. A box wholly in the letterbox padding comes
out with zero width or height (the evaluation drops such boxes).

```python
# doctest: slow
from byol_keras.evaluation import evaluate_run

tiny = ["detect.epochs=1", "detect.image_size=[64, 64]", "detect.batch_size=2"]
tiny += ["detect.precise_bn_batches=0"]  # a 1-epoch toy: re-estimated statistics fail parity
evaluate_run("runs/bccd", "detect", label_fraction=0.5, overrides=tiny)
manifest = export_run("runs/bccd", model="detector", detector="detect-50pct")
```
"""

import json
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
)
from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory
from byol_keras.transfer.detection.prediction import detect
from byol_keras.transfer.detection.preprocessor import letterbox
from byol_keras.transfer.detection.protocol import result_test_split

BOXES, SCORES, CLASSES, COUNT = "boxes", "scores", "classes", "num_detections"
REAL_IMAGES = 2


def detector_outputs(images, detector: keras.Model, size: tuple) -> dict:
    """The exported function: decoded detections in the input's pixels."""
    images = tf.ensure_shape(images, [None, None, None, 3])
    pixels, scale = letterbox(images, size)
    decoded = detect(detector, pixels)
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    valid = decoded["classes"] >= 0
    boxes = decoded["boxes"] / tf.stack([scale[1], scale[0], scale[1], scale[0]])
    boxes = tf.minimum(tf.maximum(boxes, 0.0), tf.stack([width, height, width, height]))
    return {
        BOXES: tf.where(valid[..., tf.newaxis], boxes, -1.0),
        SCORES: tf.cast(decoded["confidence"], tf.float32),
        CLASSES: tf.cast(decoded["classes"], tf.int32),
        COUNT: tf.cast(decoded["num_detections"], tf.int32),
    }


def write_saved_model(detector: keras.Model, size: tuple, path: Path) -> None:
    """Writes a SavedModel whose `serving_default` signature is `detector_outputs`."""
    serving.write_endpoint(
        [detector], lambda images: detector_outputs(images, detector, size), path
    )


def contract(max_detections: int) -> dict:
    """Input and output names, dtypes and shapes that every artifact must show."""
    count = max_detections
    return {
        "inputs": {serving.INPUT_NAME: {"dtype": "uint8", "shape": [None, None, None, 3]}},
        "outputs": {
            BOXES: {"dtype": "float32", "shape": [None, count, 4]},
            SCORES: {"dtype": "float32", "shape": [None, count]},
            CLASSES: {"dtype": "int32", "shape": [None, count]},
            COUNT: {"dtype": "int32", "shape": [None]},
        },
    }


def export_model(run: RunDirectory, request: ExportRequest, result: dict, model_path: Path) -> dict:
    """Publishes the detector kept at `model_path`, whose evaluation wrote `result`.

    Called by `run.export_run` with a checked request and the result found by
    `RunDirectory.find_result`.
    """
    parameters = result["parameters"]
    size = tuple(parameters["image_size"])
    detector = load_model(model_path, compile=False)

    def write(path: Path) -> None:
        write_saved_model(detector, size, path)

    def check(staged: dict, workdir: Path) -> dict:
        return verify(result, staged, detector, size, workdir)

    meanings = {
        serving.INPUT_NAME: "RGB pixels 0..255, any height and width, one size per batch",
        BOXES: "x0, y0, x1, y1 in the input's pixels, best first; -1 after num_detections",
        SCORES: "confidence of each box; -1 after num_detections",
        CLASSES: "class index of each box (see class_names); -1 after num_detections",
        COUNT: "how many of the N rows are detections",
    }
    expected = contract(parameters["max_detections"])
    description = {
        "model": "detector",
        "detector": {
            "result": model_path.parent.name,
            "backbone": result["backbone"],
            "test_ap50": result["ap50"],
            "test_ap": result["ap"],
            "class_names": result["class_names"],
        },
        **described_contract(expected, meanings),
        "preprocessing": "cast to float32, divide by 255, bilinear resize (half-pixel centres, "
        f"no antialiasing) keeping the aspect ratio to fit {size[0]}x{size[1]}, zero padding "
        "at the bottom and right",
        "postprocessing": f"per-class non-maximum suppression inside the model (IoU 0.5, score "
        f">= {parameters['score_threshold']}, at most {parameters['max_detections']}); boxes "
        "scaled back to the input's pixels and clipped to it",
        "image_size": list(size),
        "tolerance": {"rule": TOLERANCE_RULE, "relative": RELATIVE_TOLERANCE},
    }
    return publish(request, run, write, check, description)


def verification_inputs(result: dict, size: tuple, seed: int = 0) -> tuple[dict, dict]:
    """Real test images at their own size and at a second size; random ones at two sizes."""
    from byol_keras.data.image_files import pillow_decode

    inputs, sets = {}, {}
    try:
        test = result_test_split(result)
        paths = test.paths[:REAL_IMAGES]
    except Exception as error:  # the data may be gone since the evaluation: random images only
        paths, reason = [], str(error)
    if paths:
        images = [pillow_decode(path) for path in paths]
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
    rng = np.random.default_rng(seed)
    for set_name, shape in (("random", (2, *size)), ("random_other", (1, size[0] + 17, 50))):
        inputs[set_name] = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        sets[set_name] = f"uniform random uint8, {shape[1]}x{shape[2]}"
    return inputs, {
        k: {"description": v, "shape": list(inputs[k].shape) if k in inputs else None}
        for k, v in sets.items()
    }


def verify(result, artifacts, detector, size, workdir) -> dict:
    """Runs the artifacts in a fresh process and compares them with the Keras detector.

    Every output must agree within the tolerance, detection counts and
    classes exactly.
    """
    inputs, input_sets = verification_inputs(result, size)
    references = {}
    for set_name, images in inputs.items():
        outputs = detector_outputs(tf.constant(images), detector, size)
        references[set_name] = {k: np.asarray(v) for k, v in outputs.items()}
    outputs, report = run_in_fresh_process(inputs, artifacts, workdir)
    checks = {kind: compare(outputs.get(kind, {}), references) for kind in artifacts}
    problems = failures(checks)
    expected = contract(result["parameters"]["max_detections"])
    for kind, found in report["contracts"].items():
        if found != expected:
            problems.append(f"{kind}: contract {json.dumps(found)} != {expected}")
    if problems:
        raise ExportVerificationError(f"{len(problems)} check(s) failed: {'; '.join(problems)}")
    return {
        "passed": True,
        "tolerance": TOLERANCE_RULE,
        "process": {"pid": report["pid"], "versions": report["versions"]},
        "input_sets": input_sets,
        **checks,
    }
