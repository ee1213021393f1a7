"""export --model detector: SavedModel and ONNX, NMS inside, agree with Keras on BCCD photos."""

import json
import tarfile

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from byol_keras.cli import main
from byol_keras.data.box_sources import load_box_split
from byol_keras.evaluation import evaluate_run
from byol_keras.registration import load_model
from byol_keras.transfer.detection import training
from byol_keras.transfer.detection.prediction import predict_detections
from byol_keras.transfer.detection.preprocessor import prepare_split
from byol_keras.transfer.detection.protocol import image_subset
from tests.transfer.detection.test_protocol import DETECT, SIZE, make_detect_run

pytestmark = pytest.mark.slow  # real data, a fine-tune, two conversions and a verifying subprocess


@pytest.fixture(scope="module")
def bccd_run(shared_data, tmp_path_factory):
    """A run pretrained (nominally) on BCCD train+val, with a detector fine-tuned briefly."""
    archive = shared_data / "bccd-voc.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent: real-data test skipped")
    root = tmp_path_factory.mktemp("bccd")
    with tarfile.open(archive) as bundle:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        bundle.extractall(root, **safe)
    config = {
        "data": {"source": f"voc:{root / 'bccd'}", "split": "train+val", "image_size": 32},
        "model": {"backbone": "resnet18", "stem": "imagenet", "width": 16, "projection_dim": 8},
        # precise_bn_batches 0: the statistics PreciseBN gives a detector of 2 steps blow up on
        # the random images the export also checks, and ONNX's rounding then parts from Keras's
        # (a real 200-step BCCD fine-tune with PreciseBN exports with parity).
        "detect": {
            **DETECT,
            "epochs": 1,
            "anchor_sizes": [4, 8, 16, 32, 64],
            "precise_bn_batches": 0,
        },
    }
    run = make_detect_run(tmp_path_factory.mktemp("run"), config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "MIN_STEPS_PER_EPOCH", 2)
        evaluate_run(run.root, "detect", label_fraction=0.05)
    return run, root / "bccd"


def test_exported_detector_matches_keras_on_bccd_photos_of_two_sizes(bccd_run, capsys):
    run, root = bccd_run
    argv = ["export", "--run", str(run.root), "--model", "detector", "--detector", "detect-5pct"]
    assert main(argv) == 0
    assert "byol_detector" in capsys.readouterr().out
    manifest = json.loads((run.root / "export" / "manifest.json").read_text())
    verification = manifest["verification"]
    assert verification["passed"] and set(manifest["artifacts"]) == {"saved_model", "onnx"}
    sets = verification["input_sets"]
    assert sets["real"]["shape"][1:] == [480, 640, 3]
    assert sets["real_resized"]["shape"][1:] == [321, 481, 3]
    for kind in ("saved_model", "onnx"):
        for set_name in ("real", "real_resized"):
            assert verification[kind][set_name]["num_detections"]["passed"], (kind, set_name)
    assert manifest["outputs"]["boxes"]["shape"] == [None, DETECT["max_detections"], 4]
    # ONNX Runtime here, on a BCCD test photo: the boxes the evaluation scored, NMS included.
    session = onnxruntime.InferenceSession(
        str(run.root / "export" / manifest["artifacts"]["onnx"]["path"]),
        providers=["CPUExecutionProvider"],
    )
    test = load_box_split(f"voc:{root}", "test")
    photo = np.asarray(Image.open(test.paths[0]).convert("RGB"))[np.newaxis]
    boxes, scores, classes, count = session.run(
        ["boxes", "scores", "classes", "num_detections"], {"images": photo}
    )
    model = load_model(run.eval_dir / "detect-5pct" / "model.keras")
    (expected,) = predict_detections(model, prepare_split(image_subset(test, [0]), SIZE), 1)
    count = int(count[0])
    assert count > 0 and classes.dtype == np.int32
    kept = (boxes[0, :count, 2] > boxes[0, :count, 0]) & (boxes[0, :count, 3] > boxes[0, :count, 1])
    np.testing.assert_allclose(boxes[0, :count][kept], expected.boxes, atol=1e-2)
    np.testing.assert_allclose(scores[0, :count][kept], expected.scores, atol=1e-5)
    np.testing.assert_array_equal(classes[0, :count][kept], expected.classes)
    smaller = np.asarray(Image.fromarray(photo[0]).resize((320, 240)))[np.newaxis]
    assert session.run(["boxes"], {"images": smaller})[0].shape == (1, DETECT["max_detections"], 4)
