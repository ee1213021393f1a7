"""Exports a run's backbone for deployment: a TF Serving SavedModel and an ONNX model, verified.

Layout under the export directory (default `<run>/export`):

    <name>/<version>/                  SavedModel; TF Serving's --model_base_path is <output>/<name>
    onnx/<name>-v<version>.onnx        the same function as ONNX (dynamic batch, height, width)
    manifests/<name>-v<version>.json   what was exported and how well it matched
    manifest.json                      a copy of the latest export's manifest

The ONNX file stays outside the version directory so that TF Serving, which
treats every integer-named folder under the base path as a SavedModel
version, sees nothing but SavedModels there.

Everything is written into a hidden staging folder beside the destination,
reloaded in a separate Python process and compared with the Keras backbone
(`parity.py`, `verify.py`), and only then renamed into place, so an
export that fails or crashes leaves no version behind.

```python
manifest = export_run("runs/quickstart", formats=("saved_model", "onnx"))
manifest["version_dir"]    # runs/quickstart/export/byol_backbone/1
manifest["verification"]   # {"passed": True, "saved_model": {...}, "onnx": {...}}
```
"""

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.config import load_config
from byol_keras.errors import ExportError, ExportVerificationError, UsageError
from byol_keras.export import signature as serving
from byol_keras.export.parity import verify_artifacts
from byol_keras.export.verify import (
    RELATIVE_TOLERANCE,
    TOLERANCE_RULE,
    isolated_python,
)
from byol_keras.training.run_dir import RunDirectory, atomic_write_text

__all__ = [
    "ExportError",
    "ExportVerificationError",
    "convert_to_onnx",
    "existing_versions",
    "export_run",
    "load_networks",
]

log = logging.getLogger(__name__)

FORMATS = ("saved_model", "onnx")
MIN_OPSET = 17
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def export_run(
    run_dir: str | Path,
    formats: tuple[str, ...] = FORMATS,
    output: str | Path | None = None,
    name: str | None = None,
    version: int | None = None,
    opset: int = MIN_OPSET,
    model: str = "backbone",
    segmenter: str | None = None,
) -> dict:
    """Exports the run's online backbone, verifies every artifact, and returns the manifest.

    Raises `UsageError` for a missing or unfinished run, a bad name, format or
    opset, or a version that already exists; `ExportVerificationError` when a
    reloaded artifact disagrees with the Keras backbone beyond the tolerance;
    `ExportError` when tf2onnx cannot convert the model.

    Args:
        run_dir: A finished run directory.
        formats: Any of `"saved_model"` and `"onnx"`.
        output: The export root; default: `<run>/export`.
        name: The model name in the TF Serving layout; default `byol_backbone`,
            or `byol_segmenter` for `model="segmenter"`.
        version: The version folder; default: one above the highest present.
        opset: The ONNX opset, from 17 to the newest the installed tf2onnx knows.
        model: `"backbone"`, or `"segmenter"` for the segmenter that
            `evaluate --protocol segment` kept (`segmenter.py`).
        segmenter: Which segmentation result, e.g. `"segment-10pct"`
            (default: `segment`, or the only one there is).

    Returns:
        The manifest written beside the artifacts: their paths, the measured
        parity and the verification process.

    ```python
    manifest = export_run("runs/cifar", formats=("onnx",), version=3, opset=18)
    manifest["artifacts"]["onnx"]["path"]   # onnx/byol_backbone-v3.onnx
    ```
    """
    run = RunDirectory(run_dir).require_finished()
    if model not in ("backbone", "segmenter"):
        raise UsageError(f"--model: expected backbone or segmenter, got {model!r}")
    if name is None:
        name = "byol_segmenter" if model == "segmenter" else "byol_backbone"
    formats = _check_request(formats, name, version, opset)
    if model == "segmenter":
        from byol_keras.evaluation.segment import segment_result

        segment_result(run, segmenter)  # refuse a missing result before writing anything
    config = load_config(run.config_path)
    transform = EvalTransform.from_config(config)
    output = Path(output) if output is not None else run.root / "export"
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output: '{output}' exists and is not a directory")
    output.mkdir(parents=True, exist_ok=True)
    version = _choose_version(output, name, version)
    if model == "segmenter":
        from byol_keras.export.segmenter import export_segmenter

        request = {"formats": formats, "output": output, "name": name, "version": version}
        return export_segmenter(run, {**request, "opset": opset, "segmenter": segmenter})
    destinations = {
        "saved_model": output / name / str(version),
        "onnx": output / "onnx" / f"{name}-v{version}.onnx",
    }

    backbone, projector = load_networks(run)
    staging = Path(tempfile.mkdtemp(dir=output, prefix=f".staging-{name}-v{version}-"))
    try:
        staged = {"saved_model": staging / "saved_model", "onnx": staging / "model.onnx"}
        log.info("writing SavedModel (%s)", transform.describe()["description"])
        serving.write_saved_model(backbone, projector, transform, staged["saved_model"])
        if "onnx" in formats:
            log.info("converting to ONNX (opset %d)", opset)
            convert_to_onnx(staged["saved_model"], staged["onnx"], opset)
        staged = {kind: path for kind, path in staged.items() if kind in formats}
        verification = verify_artifacts(config, staged, backbone, projector, staging)
        artifacts = {
            kind: _describe(kind, path, destinations[kind], output, opset)
            for kind, path in staged.items()
        }
        _commit(staged, destinations)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    manifest = {
        "name": name,
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": str(run.root),
        "output": str(output),
        # The folder TF Serving loads; for an ONNX-only export, the ONNX file.
        "version_dir": str(destinations["saved_model" if "saved_model" in formats else "onnx"]),
        "artifacts": artifacts,
        **_contract_section(serving.contract(backbone, projector, transform.image_size), transform),
        "precision": {"trained": config.train.precision, "exported": "float32"},
        "verification": verification,
        "versions": _library_versions(),
    }
    manifest_path = output / "manifests" / f"{name}-v{version}.json"
    manifest_path.parent.mkdir(exist_ok=True)
    text = json.dumps(manifest, indent=2)
    atomic_write_text(manifest_path, text)
    atomic_write_text(output / "manifest.json", text)
    log.info("exported version %d to %s", version, manifest["version_dir"])
    return manifest


def _check_request(formats, name: str, version, opset: int) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise UsageError(f"--format: expected saved_model, onnx or all, got {unknown or 'none'}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"--name: {name!r} is not a model name (letters, digits, '_', '.', '-'; "
            "no path separators)"
        )
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise UsageError(f"--version: expected a positive integer, got {version!r}")
    if "onnx" in formats:
        import tf2onnx.constants

        newest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
        if (
            isinstance(opset, bool)
            or not isinstance(opset, int)
            or not MIN_OPSET <= opset <= newest
        ):
            raise UsageError(
                f"--opset: expected {MIN_OPSET} to {newest} (tf2onnx "
                f"{tf2onnx.__version__}), got {opset!r}"
            )
    return formats


def existing_versions(output: str | Path, name: str) -> set[int]:
    """Versions of `name` that any artifact or manifest under `output` already uses.

    ```python
    existing_versions("runs/quickstart/export", "byol_backbone")  # {1, 2}
    ```
    """
    output = Path(output)
    versions = set()
    if (output / name).is_dir():
        versions |= {int(p.name) for p in (output / name).iterdir() if p.name.isdigit()}
    pattern = re.compile(re.escape(name) + r"-v(\d+)\.(onnx|json)")
    for folder in (output / "onnx", output / "manifests"):
        if folder.is_dir():
            matches = (pattern.fullmatch(p.name) for p in folder.iterdir())
            versions |= {int(m.group(1)) for m in matches if m}
    return versions


def _choose_version(output: Path, name: str, version: int | None) -> int:
    taken = existing_versions(output, name)
    if version is None:
        return max(taken, default=0) + 1
    if version in taken:
        raise UsageError(
            f"--version: {name} version {version} already exists in '{output}' "
            f"(next free: {max(taken) + 1}); exports never overwrite"
        )
    return version


def load_networks(run: RunDirectory) -> tuple[keras.Model, keras.Model]:
    """The online backbone from backbone.keras and the online projector from model.keras.

    Both compute in float32 even when the run trained in mixed precision; the
    parity check then compares the artifacts with these float32 networks, and
    `byol-keras embed` computes what the artifacts compute.

    ```python
    backbone, projector = load_networks(RunDirectory("runs/quickstart").require_finished())
    ```
    """
    import byol_keras.model  # noqa: F401  registers BYOL for load_model

    # model.keras holds the augmenter layer when training augmented on the device;
    # importing the module registers that layer for deserialisation.
    with contextlib.suppress(ImportError):
        import byol_keras.augment  # noqa: F401
    backbone = keras.saving.load_model(run.backbone_path, compile=False)
    projector = keras.saving.load_model(run.model_path, compile=False).online_projector
    if serving.compute_dtypes(backbone) | serving.compute_dtypes(projector) != {"float32"}:
        log.info("the run trained in mixed precision; exporting a float32 copy")
        backbone, projector = serving.float32_copy(backbone), serving.float32_copy(projector)
    return backbone, projector


def convert_to_onnx(saved_model: str | Path, path: str | Path, opset: int) -> None:
    """Converts the SavedModel's serving signature to ONNX with the tf2onnx command line.

    tf2onnx 1.17's Python `from_function` turns the backbone's captured
    normalisation constants into extra graph inputs with TF 2.21; converting
    the written SavedModel gives one input, `images`, as the contract says.

    ```python
    convert_to_onnx("export/byol_backbone/1", "export/onnx/byol_backbone-v1.onnx", opset=17)
    ```
    """
    command = isolated_python(
        "tf2onnx.convert",
        [
            "--saved-model",
            str(saved_model),
            "--signature_def",
            serving.SIGNATURE_NAME,
            "--tag",
            "serve",
            "--opset",
            str(opset),
            "--output",
            str(path),
        ],
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0 or not Path(path).is_file():
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ExportError(f"tf2onnx could not convert the SavedModel: {lines[-1] if lines else ''}")


def _describe(kind: str, staged: Path, destination: Path, output: Path, opset: int) -> dict:
    relative = destination.relative_to(output).as_posix()
    if kind == "onnx":
        return {"path": relative, "sha256": _sha256(staged), "opset": opset}
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    return {
        "path": relative,
        "signature": serving.SIGNATURE_NAME,
        "tag_set": "serve",
        "sha256": {p.relative_to(staged).as_posix(): _sha256(p) for p in files},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _commit(staged: dict, destinations: dict) -> None:
    """Renames the verified artifacts into place; the SavedModel version directory goes last."""
    moved = []
    try:
        for kind in sorted(staged, key=lambda k: k == "saved_model"):
            destination = destinations[kind]
            if destination.exists():
                raise UsageError(f"--version: '{destination}' appeared during the export")
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged[kind], destination)
            moved.append(destination)
    except BaseException:
        for path in moved:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        raise


def _contract_section(contract: dict, transform: EvalTransform) -> dict:
    meanings = {
        serving.INPUT_NAME: "RGB pixels 0..255, any height and width",
        serving.EMBEDDINGS: "online backbone features",
        serving.PROJECTIONS: "online projector applied to the embeddings",
    }
    return {
        "inputs": {k: {**v, "meaning": meanings[k]} for k, v in contract["inputs"].items()},
        "outputs": {k: {**v, "meaning": meanings[k]} for k, v in contract["outputs"].items()},
        "preprocessing": f"cast to float32, divide by 255; "
        f"{transform.describe()['description']}; the backbone standardises with the "
        "ImageNet mean/std inside",
        "image_size": transform.image_size,
        "eval_transform": transform.describe(),
        "tolerance": {"rule": TOLERANCE_RULE, "relative": RELATIVE_TOLERANCE},
    }


def _library_versions() -> dict:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
