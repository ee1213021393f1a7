"""The serving contract: uint8 images of any size in, float32 embeddings out.

Every exported artifact (SavedModel for TF Serving, ONNX) computes the same
function, `serving_outputs`:

    images  uint8   [batch, height, width, 3]   RGB, any height and width
      → cast to float32, divide by 255                    (the backbone's [0, 1] input)
      → the evaluation transform to the training size     (augment/eval_transform.py: by default
                                                           the short side resized, the central
                                                           square kept; antialiased)
      → online backbone (standardises with ImageNet mean/std inside)
    embeddings   float32 [batch, D]   the representation to use downstream
    projections  float32 [batch, P]   the online projector applied to embeddings

```python
# doctest: slow
from byol_keras.runs import RunDirectory, load_networks

backbone, projector = load_networks(RunDirectory("runs/quickstart"))
write_saved_model(backbone, projector, EvalTransform(16), path="export/byol_backbone/1")
outputs = tf.saved_model.load("export/byol_backbone/1").signatures["serving_default"](
    images=tf.zeros([2, 48, 64, 3], tf.uint8)
)
assert outputs["embeddings"].shape == (2, 16)  # (2, D)
```
"""

from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from byol_keras.augment.eval_transform import EvalTransform

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
INPUT_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)
EMBEDDINGS = "embeddings"
PROJECTIONS = "projections"


def preprocess(images, transform: EvalTransform):
    """Turns uint8 RGB images of any size into the backbone's float [0, 1] input.

    The evaluation transform, the very ops that evaluation and `embed` run:
    images already at the training size pass through unchanged.
    """
    return transform(images)


def serving_outputs(
    images, backbone: keras.Model, projector: keras.Model | None, transform: EvalTransform
) -> dict:
    """The exported function: embeddings (and projections, when a projector is given)."""
    # The signature fixes 3 channels but a loaded signature does not check
    # shapes, and 1 channel would silently broadcast against the RGB mean.
    images = tf.ensure_shape(images, [None, None, None, 3])
    embeddings = tf.cast(backbone(preprocess(images, transform), training=False), tf.float32)
    outputs = {EMBEDDINGS: embeddings}
    if projector is not None:
        outputs[PROJECTIONS] = tf.cast(projector(embeddings, training=False), tf.float32)
    return outputs


def write_saved_model(
    backbone: keras.Model,
    projector: keras.Model | None,
    transform: EvalTransform,
    path: str | Path,
) -> None:
    """Writes a SavedModel whose `serving_default` signature is `serving_outputs`.

    ```python
    # doctest: slow
    backbone = build_backbone("tiny", image_size=16, width=4)
    write_saved_model(backbone, None, EvalTransform(16), "export/byol_backbone/1")  # embeddings
    ```
    """
    models = [backbone] if projector is None else [backbone, projector]
    write_endpoint(
        models, lambda images: serving_outputs(images, backbone, projector, transform), path
    )


def write_endpoint(models: list[keras.Model], serve: Callable, path: str | Path) -> None:
    """Writes a SavedModel of `models` whose `serving_default` signature is `serve(images)`.

    Every export (backbone, segmenter, detector) takes the same input: uint8 images
    `[batch, height, width, 3]` named `images`.

    ```python
    # doctest: slow
    backbone = build_backbone("tiny", image_size=16, width=4)
    write_endpoint([backbone], lambda images: {"features": backbone(images)}, "export/tiny/1")
    ```
    """
    archive = keras.export.ExportArchive()
    for model in models:
        archive.track(model)
    archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=[INPUT_SPEC])
    archive.write_out(str(path), verbose=False)


def contract(backbone: keras.Model, projector: keras.Model | None, image_size: int) -> dict:
    """Input and output names, dtypes and shapes that every artifact must show.

    ```python
    backbone = build_backbone("tiny", image_size=16, width=4)
    assert contract(backbone, None, 16)["outputs"] == {
        "embeddings": {"dtype": "float32", "shape": [None, 16]}  # [None, D]
    }
    ```
    """
    # Computed from a symbolic call: subclassed and reloaded models have no `.output`.
    images = keras.KerasTensor((None, image_size, image_size, 3))
    features = backbone.compute_output_spec(images)
    outputs = {EMBEDDINGS: {"dtype": "float32", "shape": [None, features.shape[-1]]}}
    if projector is not None:
        projections = projector.compute_output_spec(features)
        outputs[PROJECTIONS] = {"dtype": "float32", "shape": [None, projections.shape[-1]]}
    images = {"dtype": "uint8", "shape": [None, None, None, 3]}
    return {"inputs": {INPUT_NAME: images}, "outputs": outputs}
