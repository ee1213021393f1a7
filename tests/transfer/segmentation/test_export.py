"""export --model segmenter: SavedModel and ONNX agree with the Keras segmenter on real CamVid.

The CamVid tests are slow (real data, a fine-tune, two conversions, a verifying subprocess);
the class check is also tested alone, on hand-made probabilities.
"""

import json

import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras.cli import main
from byol_keras.config import from_dict, save_config
from byol_keras.evaluation import evaluate_run
from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory
from byol_keras.transfer.segmentation.export import CLASSES as CLASSES_KEY
from byol_keras.transfer.segmentation.export import PROBABILITIES, _classes_check

CLASSES = 11


@pytest.fixture(scope="module")
def segmented_run(camvid_folder, tmp_path_factory):
    """A run with a ResNet-18 (width 4) backbone and a segmenter fine-tuned for one short epoch."""
    from byol_keras.builders import backbone_from_config
    from byol_keras.methods.byol import BYOL

    keras.utils.set_random_seed(0)
    run = RunDirectory(tmp_path_factory.mktemp("camvid-run")).create()
    config = from_dict(
        {
            "data": {
                "source": f"segfolder:{camvid_folder}",
                "split": "train+val",
                "image_size": 32,
            },
            "model": {"backbone": "resnet18", "stem": "imagenet", "width": 4},
            "segment": {"image_size": [24, 32], "epochs": 1, "decoder_channels": 4},
        }
    )
    save_config(config, run.config_path)
    backbone = backbone_from_config(config)
    heads = {"projection_dim": 8, "projector_hidden_dim": 16, "predictor_hidden_dim": 16}
    BYOL(backbone, **heads).save(run.model_path)
    backbone.save(run.backbone_path)
    run.finish({"epochs": 1})
    evaluate_run(run.root, "segment", label_fraction=0.05)
    return run


def _keras_reference(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The contract, written out here: scale, resize to 24x32, segmenter, resize back, softmax."""
    pixels = tf.image.resize(images.astype(np.float32) / 255.0, (24, 32), method="bilinear")
    logits = tf.image.resize(model(pixels), images.shape[1:3], method="bilinear")
    return np.argmax(logits, axis=-1), tf.nn.softmax(logits).numpy()


def test_exported_segmenter_matches_keras_on_camvid_images_of_two_sizes(
    segmented_run, camvid_folder, capsys
):
    run = segmented_run
    assert main(["export", "--run", str(run.root), "--model", "segmenter"]) == 0
    assert capsys.readouterr().out.strip().endswith("export/byol_segmenter/1")
    manifest = json.loads((run.root / "export" / "manifest.json").read_text())
    assert manifest["model"] == "segmenter" and manifest["verification"]["passed"]
    assert manifest["verification"]["input_sets"]["real"]["shape"] == [4, 360, 480, 3]
    assert manifest["outputs"]["probabilities"]["shape"] == [None, None, None, CLASSES]

    names = sorted((camvid_folder / "test" / "images").iterdir())[:2]
    full = np.stack([np.asarray(Image.open(name).convert("RGB")) for name in names])
    other = np.stack([np.asarray(Image.fromarray(i).resize((301, 203))) for i in full])
    model = load_model(run.eval_dir / "segment-5pct" / "model.keras")
    signature = tf.saved_model.load(manifest["version_dir"]).signatures["serving_default"]
    onnx = onnxruntime.InferenceSession(
        str(run.root / "export" / manifest["artifacts"]["onnx"]["path"]),
        providers=["CPUExecutionProvider"],
    )
    for images in (full, other):
        classes, probabilities = _keras_reference(model, images)
        served = signature(images=tf.constant(images))
        onnx_classes, onnx_probabilities = onnx.run(
            ["classes", "probabilities"], {"images": images}
        )
        for got_classes, got_probabilities in (
            (served["classes"].numpy(), served["probabilities"].numpy()),
            (onnx_classes, onnx_probabilities),
        ):
            assert got_probabilities.shape == (2, *images.shape[1:3], CLASSES)
            assert np.abs(got_probabilities - probabilities).max() <= 2e-4
            assert got_classes.dtype == np.int32 and got_classes.shape == images.shape[:3]
            assert np.mean(got_classes == classes) > 0.999  # near-ties may go either way


def test_exporting_a_segmenter_the_run_lacks_exits_2(segmented_run, capsys):
    argv = ["export", "--run", str(segmented_run.root), "--model", "segmenter"]
    assert main([*argv, "--segmenter", "segment-random"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no segment result 'segment-random'" in error[0]


def test_the_class_check_counts_pixels_and_claims_no_max_abs_diff():
    # Review defect 8: `max_abs_diff` held the number of clearly mismatched pixels.
    probabilities = np.array([[[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]], np.float32)  # [1, 3, 2]
    reference = {PROBABILITIES: probabilities, CLASSES_KEY: np.array([[0, 0, 1]])}
    # Pixel 1 is a tie (either class is right); pixel 2 has a clear arg-max and got class 0.
    check = _classes_check(np.array([[0, 1, 0]]), reference)
    assert "max_abs_diff" not in check
    assert check["pixels"] == 3 and check["differing_pixels"] == 2
    assert check["clear_mismatches"] == 1 and check["passed"] is False
    assert check["margin"] == pytest.approx(2 * 1e-4 * (1 + 0.9))
    assert _classes_check(np.array([[0, 1, 1]]), reference)["passed"] is True
