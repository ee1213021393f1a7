"""Export: TF Serving SavedModel and ONNX with verified parity, versioning, failure safety."""

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras import cli
from byol_keras.config import from_dict
from byol_keras.errors import UsageError
from byol_keras.export import export_run
from byol_keras.export import signature as serving
from byol_keras.export.parity import verification_inputs
from byol_keras.registration import load_model
from tests.helpers.eval_transform import pil_eval_transform
from tests.helpers.export import make_finished_run, serve_saved_model

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 16
TOLERANCE = 1e-4  # the documented rule: max|diff| <= 1e-4 * (1 + max|reference|)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("export") / "run", IMAGE_SIZE)


@pytest.fixture(scope="module")
def exported(run):
    return export_run(run.root)


@pytest.fixture(scope="module")
def backbone(run):
    return load_model(run.backbone_path, compile=False)


@pytest.fixture(scope="module")
def image_folder(shared_data, tmp_path_factory):
    """Real image files: CIFAR-10 JPEGs (32x32), and MNIST digits saved as grey and RGBA PNGs."""
    folder = tmp_path_factory.mktemp("images")
    with tarfile.open(shared_data / "cifar10-jpeg.tar.gz", "r|gz") as archive:
        jpegs = (m for m in archive if m.isfile() and m.name.endswith(".jpg"))
        for index, member in zip(range(6), jpegs, strict=False):
            (folder / f"cifar_{index}.jpg").write_bytes(archive.extractfile(member).read())
    with np.load(shared_data / "mnist.npz") as mnist:
        digits = mnist["x_test"][:3]
    Image.fromarray(digits[0]).save(folder / "digit_grey.png")
    Image.fromarray(digits[1]).save(folder / "digit_grey_2.png")
    rgba = np.dstack([np.repeat(digits[2][..., None], 3, axis=-1), np.full((28, 28), 255)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(folder / "digit_rgba.png")
    return folder


def keras_embeddings(backbone, images: np.ndarray) -> np.ndarray:
    """The reference: Pillow's centre crop and antialiased resize to [0, 1], then the backbone."""
    pixels = np.stack([pil_eval_transform(image, IMAGE_SIZE) for image in images])
    return backbone(pixels, training=False).numpy()


def assert_close(actual, reference):
    assert actual.shape == reference.shape
    limit = TOLERANCE * (1 + np.abs(reference).max())
    assert np.abs(actual - reference).max() <= limit


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_export_writes_tf_serving_layout_and_a_manifest_of_measured_parity(run, exported):
    output = run.root / "export"
    version_dir = output / "byol_backbone" / "1"
    assert exported["version_dir"] == str(version_dir)
    assert (version_dir / "saved_model.pb").is_file()
    assert sorted(p.name for p in version_dir.iterdir()) == sorted(
        ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    )
    assert [p.name for p in output.iterdir() if p.name.startswith(".")] == []  # no staging left
    on_disk = json.loads((output / "manifests" / "byol_backbone-v1.json").read_text())
    assert on_disk == json.loads(json.dumps(exported))

    onnx = exported["artifacts"]["onnx"]
    assert onnx["path"] == "onnx/byol_backbone-v1.onnx" and onnx["opset"] == 17
    assert onnx["sha256"] == sha256(output / onnx["path"])
    saved = exported["artifacts"]["saved_model"]["sha256"]
    files = [p for p in version_dir.rglob("*") if p.is_file()]
    assert saved == {p.relative_to(version_dir).as_posix(): sha256(p) for p in files}

    assert exported["inputs"]["images"]["dtype"] == "uint8"
    assert exported["inputs"]["images"]["shape"] == [None, None, None, 3]
    assert exported["outputs"]["embeddings"]["shape"] == [None, 16]  # tiny CNN, width 4
    assert exported["outputs"]["projections"]["shape"] == [None, 8]
    assert exported["versions"]["tensorflow"] == tf.__version__
    assert exported["versions"]["onnxruntime"] == onnxruntime.__version__

    verification = exported["verification"]
    assert verification["passed"] is True
    assert verification["process"]["pid"] != os.getpid()
    sets = verification["input_sets"]
    assert sets["real"]["description"].startswith("digits split train")
    assert sets["real"]["shape"] == [16, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert sets["random_large"]["shape"][1:3] != [IMAGE_SIZE, IMAGE_SIZE]
    for artifact in ("saved_model", "onnx"):
        assert set(verification[artifact]) == set(sets)
        for per_output in verification[artifact].values():
            assert set(per_output) == {"embeddings", "projections"}
            for check in per_output.values():
                assert check["tolerance"] == pytest.approx(
                    TOLERANCE * (1 + check["max_abs_reference"])
                )
                assert 0 <= check["max_abs_diff"] <= check["tolerance"] and check["passed"]
                assert check["max_abs_reference"] > 0  # a real network, not all zeros


@pytest.mark.slow
def test_reloaded_artifacts_match_the_keras_backbone_at_any_size_and_batch(run, exported, backbone):
    signature = tf.saved_model.load(exported["version_dir"]).signatures["serving_default"]
    session = onnxruntime.InferenceSession(
        str(run.root / "export" / exported["artifacts"]["onnx"]["path"])
    )
    rng = np.random.default_rng(7)
    for shape in [(1, IMAGE_SIZE, IMAGE_SIZE), (5, 23, 41), (2, 64, 9)]:
        images = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        reference = keras_embeddings(backbone, images)
        assert_close(signature(images=tf.constant(images))["embeddings"].numpy(), reference)
        (onnx_embeddings,) = session.run(["embeddings"], {"images": images})
        assert_close(onnx_embeddings, reference)
    projector = load_model(run.model_path, compile=False).online_projector
    projections = signature(images=tf.constant(images))["projections"].numpy()
    assert_close(projections, projector(reference, training=False).numpy())


@pytest.mark.slow
def test_saved_model_cli_lists_images_and_embeddings(exported):
    tool = Path(sys.executable).with_name("saved_model_cli")
    listing = subprocess.run(
        [
            str(tool),
            "show",
            "--dir",
            exported["version_dir"],
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(
        r"inputs\['images'\].*?dtype: DT_UINT8\s+shape: \(-1, -1, -1, 3\)", listing, re.S
    )
    assert re.search(
        r"outputs\['embeddings'\].*?dtype: DT_FLOAT\s+shape: \(-1, 16\)", listing, re.S
    )
    assert "outputs['projections']" in listing


@pytest.mark.slow
def test_artifacts_reject_float_images_and_wrong_channel_counts(run, exported):
    signature = tf.saved_model.load(exported["version_dir"]).signatures["serving_default"]
    session = onnxruntime.InferenceSession(
        str(run.root / "export" / exported["artifacts"]["onnx"]["path"])
    )
    good = np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    bad_inputs = [good.astype(np.float32), good[..., :1], np.concatenate([good, good[..., :1]], -1)]
    for bad in bad_inputs:
        with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError)):
            signature(images=tf.constant(bad))
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            session.run(None, {"images": bad})


@pytest.mark.slow
def test_versions_count_up_across_formats_and_are_never_overwritten(run, exported):
    output = run.root / "export"
    first_onnx = sha256(output / "onnx" / "byol_backbone-v1.onnx")
    second = export_run(run.root, formats=("onnx",))
    assert second["version"] == 2 and set(second["artifacts"]) == {"onnx"}
    assert second["version_dir"] == str(output / "onnx" / "byol_backbone-v2.onnx")
    assert not (output / "byol_backbone" / "2").exists()  # ONNX only: no SavedModel version
    assert json.loads((output / "manifest.json").read_text())["version"] == 2
    assert sha256(output / "onnx" / "byol_backbone-v1.onnx") == first_onnx
    for taken in (1, 2):  # 1 has a SavedModel, 2 only an ONNX file
        with pytest.raises(UsageError, match=f"version {taken} already exists"):
            export_run(run.root, version=taken)


def test_parity_images_fall_back_to_the_validation_source(tmp_path):
    data = {"source": f"folder:{tmp_path / 'moved'}", "image_size": 12}
    config = from_dict({"data": {**data, "val_source": "digits", "val_split": "test"}})
    inputs, sets = verification_inputs(config)
    assert sets["real"]["description"].startswith("digits split test")
    assert inputs["real"].shape == (16, 12, 12, 3) and inputs["real"].dtype == np.uint8
    assert inputs["real"].std() > 10  # pictures of digits, not a constant
    assert inputs["real_tiled"].shape == (16, 24, 36, 3)

    inputs, sets = verification_inputs(from_dict({"data": data}))
    assert "real" not in inputs and sets["real"]["description"].startswith("skipped:")
    assert {"random", "random_large", "random_small"} <= set(inputs)


@pytest.mark.slow
def test_a_mixed_precision_run_is_exported_in_float32(tmp_path):
    # onnxruntime's CPU kernels reject the bfloat16 graph a mixed-precision backbone traces to.
    run = make_finished_run(tmp_path / "run", IMAGE_SIZE, precision="mixed_bfloat16")
    manifest = export_run(run.root, formats=("onnx",))
    assert manifest["verification"]["passed"]
    assert manifest["precision"] == {"trained": "mixed_bfloat16", "exported": "float32"}
    session = onnxruntime.InferenceSession(manifest["version_dir"])
    images = np.random.default_rng(3).integers(0, 256, (4, 20, 12, 3), dtype=np.uint8)
    (embeddings,) = session.run(["embeddings"], {"images": images})
    assert embeddings.dtype == np.float32
    # The same network as trained, up to bfloat16 rounding (8 significant bits).
    mixed = load_model(run.backbone_path, compile=False)
    trained = np.asarray(keras_embeddings(mixed, images), np.float32)
    assert np.abs(embeddings - trained).max() <= 3e-2 * (1 + np.abs(trained).max())


def test_a_crashing_converter_leaves_no_version_behind(run, tmp_path, monkeypatch):
    def broken_converter(saved_model, path, opset):
        Path(path).write_bytes(b"half an onnx file")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr("byol_keras.export.publish.convert_to_onnx", broken_converter)
    output = tmp_path / "out"
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_run(run.root, output=output)
    assert list(output.iterdir()) == []  # no version folder, no ONNX file, no staging


@pytest.mark.slow
def test_failed_verification_exits_1_with_one_line_and_leaves_no_version(
    run, tmp_path, monkeypatch, capsys
):
    # A classic deployment bug: the artifact forgets to scale pixels to [0, 1].
    write = serving.write_saved_model

    def write_without_scaling(*args, **kwargs):
        correct = serving.preprocess
        monkeypatch.setattr(serving, "preprocess", lambda images, size: correct(images, size) * 255)
        try:
            write(*args, **kwargs)
        finally:
            monkeypatch.setattr(serving, "preprocess", correct)

    monkeypatch.setattr(serving, "write_saved_model", write_without_scaling)
    output = tmp_path / "out"
    code = cli.main(
        ["export", "--run", str(run.root), "--output", str(output), "--format", "saved_model"]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(error) == 1 and error[0].startswith("byol-keras: export failed:")
    assert "saved_model/random/embeddings" in error[0]
    assert list(output.iterdir()) == []


@pytest.mark.slow
def test_export_helpers_do_not_import_from_the_working_directory(run, tmp_path, monkeypatch):
    working_dir = tmp_path / "cwd"
    working_dir.mkdir()
    (working_dir / "numpy.py").write_text('raise ImportError("numpy.py of the working dir")\n')
    monkeypatch.chdir(working_dir)
    manifest = export_run(run.root, output=tmp_path / "out")
    assert manifest["verification"]["passed"]
    assert set(manifest["artifacts"]) == {"saved_model", "onnx"}
    # The helper processes ran: the verification process reported its own pid.
    assert manifest["verification"]["process"]["pid"] != os.getpid()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--run", "{missing}"], "does not exist"),
        (["--run", "{unfinished}"], "is not a finished run"),
        (["--run", "{run}", "--name", "../escape"], "--name"),
        (["--run", "{run}", "--name", "manifest.json"], "--name: 'manifest.json' is reserved"),
        (["--run", "{run}", "--opset", "16"], "--opset: expected 17 to"),
        (["--run", "{run}", "--version", "0"], "--version: expected a positive integer"),
    ],
)
def test_bad_export_requests_exit_2_naming_the_problem(run, tmp_path, capsys, arguments, message):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(run.config_path.read_text())
    paths = {"missing": tmp_path / "nope", "unfinished": unfinished, "run": run.root}
    argv = ["export"] + [a.format(**paths) for a in arguments] + ["--output", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("byol-keras: error:") and message in error[0]
    assert not (tmp_path / "o" / "byol_backbone").exists()
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.slow
def test_serving_client_gets_embeddings_from_a_tf_serving_rest_stand_in(
    exported, backbone, image_folder, tmp_path
):
    files = sorted(image_folder.iterdir())  # 32x32 JPEGs and 28x28 grey/RGBA PNGs: two requests
    with serve_saved_model(Path(exported["version_dir"]), "byol_backbone") as url:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "export" / "serving_client.py"),
                "--url",
                url,
                "--model",
                "byol_backbone",
                "--version",
                "1",
                "--batch-size",
                "4",
                "--output",
                str(tmp_path / "e.npy"),
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        wrong = subprocess.run(
            [
                sys.executable,
                str(ROOT / "export" / "serving_client.py"),
                "--url",
                url,
                "--model",
                "other",
                str(files[0]),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == list(map(str, files))
    printed = np.array([line["embedding"] for line in lines], np.float32)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), printed)
    for path, embedding in zip(files, printed, strict=True):
        assert_close(embedding[None], keras_embeddings(backbone, rgb(path)[None]))
    assert wrong.returncode == 1 and "HTTP 404" in wrong.stderr


@pytest.mark.slow
def test_readme_curl_request_is_answered_as_documented(exported):
    readme = (ROOT / "export" / "README.md").read_text()
    body = re.search(r"-d '\n(\{.*?\})'", readme, re.S).group(1)
    with serve_saved_model(Path(exported["version_dir"]), "byol_backbone") as url:
        request = urllib.request.Request(
            f"{url}/v1/models/byol_backbone:predict", data=body.encode()
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    assert len(predictions) == 1 and set(predictions[0]) == {"embeddings", "projections"}
    assert len(predictions[0]["embeddings"]) == 16


@pytest.mark.slow
def test_onnx_embed_script_embeds_a_folder_of_real_images(
    run, exported, backbone, image_folder, tmp_path
):
    model = run.root / "export" / exported["artifacts"]["onnx"]["path"]
    output = tmp_path / "emb.npy"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "export" / "onnx_embed.py"),
            str(model),
            str(image_folder),
            "--output",
            str(output),
            "--batch-size",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(p) for p in output.with_suffix(".txt").read_text().splitlines()]
    assert paths == sorted(image_folder.iterdir())
    embeddings = np.load(output)
    assert embeddings.shape == (len(paths), 16) and embeddings.dtype == np.float32
    reference = np.concatenate([keras_embeddings(backbone, rgb(p)[None]) for p in paths])
    assert_close(embeddings, reference)
    missing = subprocess.run(
        [
            sys.executable,
            str(ROOT / "export" / "onnx_embed.py"),
            str(tmp_path / "no.onnx"),
            str(image_folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "no ONNX model" in missing.stderr


def test_models_config_serves_the_export_layout():
    text = (ROOT / "export" / "models.config").read_text()
    body = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert body.count("{") == body.count("}")
    assert re.search(r'name:\s*"byol_backbone"', body)
    # TF Serving's base_path is <output>/<name>: the folder of integer versions.
    assert re.search(r'base_path:\s*"[^"]*/byol_backbone"', body)
    assert re.search(r'model_platform:\s*"tensorflow"', body)


@pytest.mark.slow
def test_cli_train_then_export_end_to_end(tmp_path):
    """The user's path: `byol-keras train` on the digits quickstart, then `byol-keras export`."""
    run_dir = tmp_path / "run"
    train = [
        sys.executable,
        "-m",
        "byol_keras",
        "train",
        "--output",
        str(run_dir),
        "--set",
        "train.epochs=1",
        "--set",
        "train.steps_per_epoch=3",
        "--set",
        "eval.final_linear_probe=false",
        "--set",
        "train.verbose=0",
    ]
    subprocess.run(train, check=True, capture_output=True, timeout=600)
    result = subprocess.run(
        [sys.executable, "-m", "byol_keras", "export", "--run", str(run_dir), "--opset", "18"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"exported to {run_dir / 'export' / 'byol_backbone' / '1'}"
    )
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["verification"]["passed"] and manifest["artifacts"]["onnx"]["opset"] == 18
    assert manifest["verification"]["input_sets"]["real"]["shape"][0] == 16
