"""One way to publish an export: stage, verify, commit, then write the manifest.

Every exported model (the backbone, a task's segmenter or detector) goes through `publish`:
its artifacts are written into a hidden staging folder beside the
destination, converted to ONNX, checked by the caller's `verify` (which
reloads them in a fresh process), and only then renamed into place, so an
export that fails or crashes leaves no version behind. The manifest is
written last, under `manifests/` and as the export root's `manifest.json`.
A staging folder records its process, so that the next export removes the
folder of one that was killed.

```python
# doctest: slow
from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.export.signature import write_saved_model as write_signature
from byol_keras.runs import load_networks

run = RunDirectory("runs/quickstart")
backbone, projector = load_networks(run)
request = check_request(("saved_model",), run.root / "export", "byol_backbone", None, 17)
def write_saved_model(path):
    write_signature(backbone, projector, EvalTransform(16), path)
def verify(staged, workdir):
    return {"passed": True}  # export_run checks each artifact against Keras here
manifest = publish(request, run, write_saved_model, verify, {"model": "backbone"})
```
"""

import dataclasses
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
import time
from collections.abc import Callable
from pathlib import Path

from byol_keras.errors import ExportError, UsageError
from byol_keras.export.signature import SIGNATURE_NAME
from byol_keras.export.verify import isolated_python
from byol_keras.runs import RunDirectory, atomic_write_text, check_writable
from byol_keras.training.run_lock import holder_gone, read_holder, this_process

log = logging.getLogger(__name__)

FORMATS = ("saved_model", "onnx")
# A KerasHub preset folder (`hub.py`): written alone, into the version folder.
KERAS_HUB = "keras_hub"
MIN_OPSET = 17
# At most 200 characters: ".staging-<name>-v<version>-XXXXXXXX" must fit in a 255-byte file name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
# In a staging folder: the exporting process, so that a later export can sweep a killed one's.
_OWNER = "owner.json"
# A staging folder without an owner record: made by a byol-keras before owner records, or by
# an export that is about to write it; taken as left behind once this old.
_UNOWNED_STALE_SECONDS = 3600
# The export root's own entries, and what each must be; no model may take their names.
_ROOT_ENTRIES = {"manifest.json": "file", "manifests": "folder", "onnx": "folder"}
# ASCII digits only: str.isdigit takes "²", which int refuses, and \d takes "٣", which TF
# Serving does not read as a version.
_VERSION = "[0-9]+"


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """A checked export request: which formats, where, under which name and version."""

    formats: tuple[str, ...]
    output: Path
    name: str
    version: int
    opset: int

    @property
    def destinations(self) -> dict[str, Path]:
        """Where each format lands: TF Serving's version folder, and the ONNX file beside it."""
        return {
            "saved_model": self.output / self.name / str(self.version),
            "onnx": self.output / "onnx" / f"{self.name}-v{self.version}.onnx",
            KERAS_HUB: self.output / self.name / str(self.version),
        }

    @property
    def written(self) -> str:
        """The format the writer makes, which every other one is converted from."""
        return KERAS_HUB if KERAS_HUB in self.formats else "saved_model"


def check_request(
    formats, output: str | Path, name: str, version: int | None, opset: int
) -> ExportRequest:
    """Checks the request and picks the version, before anything is written but the output folder.

    ```python
    request = check_request(("onnx",), "runs/quickstart/export", "byol_backbone", None, 17)
    assert request.version == 1  # one above the highest present
    ```
    """
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in (*FORMATS, KERAS_HUB)]
    if not formats or unknown:
        raise UsageError(
            f"--format: expected saved_model, onnx, keras-hub or all, got {unknown or 'none'}"
        )
    if KERAS_HUB in formats and len(formats) > 1:
        # The preset takes the version folder where the SavedModel would go.
        raise UsageError("--format: keras-hub is exported alone, not with saved_model or onnx")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"--name: {name!r} is not a model name (up to 200 letters, digits, '_', '.', '-'; "
            "no path separators)"
        )
    # Case-insensitively, as macOS's and Windows's file systems compare names.
    if name.casefold() in _ROOT_ENTRIES:
        raise UsageError(
            f"--name: {name!r} is reserved: the export root keeps its manifest.json, "
            "manifests/ and onnx/ there"
        )
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise UsageError(f"--version: expected a positive integer, got {version!r}")
    if "onnx" in formats:
        _check_opset(opset)
    output = check_writable(output, "--output")
    for entry, kind in {**_ROOT_ENTRIES, name: "folder"}.items():
        path = output / entry
        if path.exists() and path.is_dir() != (kind == "folder"):
            other = "file" if kind == "folder" else "folder"
            raise UsageError(f"--output: '{path}' is a {other}, not a {kind}; move it away")
    _check_one_kind(output / name, formats)
    return ExportRequest(formats, output, name, _choose_version(output, name, version), opset)


def publish(
    request: ExportRequest,
    run: RunDirectory,
    write_saved_model: Callable[[Path], None],
    verify: Callable[[dict, Path], dict],
    description: dict,
) -> dict:
    """Stages, verifies and commits the artifacts, then writes and returns the manifest.

    `write_saved_model(path)` writes the SavedModel that every artifact is
    made from (for `keras_hub`, the preset folder instead);
    `verify(staged, workdir)` checks the staged artifacts (a dict format →
    path) and returns the verification record, or raises.
    `description` is the caller's part of the manifest: the model, its
    contract and preprocessing.
    """
    destinations = request.destinations
    _sweep_staging(request.output)
    staging = Path(
        tempfile.mkdtemp(dir=request.output, prefix=f".staging-{request.name}-v{request.version}-")
    )
    try:
        (staging / _OWNER).write_text(json.dumps(this_process()))
        staged = {
            "saved_model": staging / "saved_model",
            "onnx": staging / "model.onnx",
            KERAS_HUB: staging / "preset",
        }
        write_saved_model(staged[request.written])
        if "onnx" in request.formats:
            log.info("converting to ONNX (opset %d)", request.opset)
            convert_to_onnx(staged["saved_model"], staged["onnx"], request.opset)
        staged = {kind: path for kind, path in staged.items() if kind in request.formats}
        verification = verify(staged, staging)
        artifacts = {
            kind: _describe(kind, path, destinations[kind], request.output, request.opset)
            for kind, path in staged.items()
        }
        _commit(staged, destinations)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    main_format = next(f for f in ("saved_model", KERAS_HUB, "onnx") if f in request.formats)
    manifest = {
        "name": request.name,
        "version": request.version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": str(run.root),
        "output": str(request.output),
        # The folder TF Serving loads; for an ONNX-only export, the ONNX file.
        "version_dir": str(destinations[main_format]),
        "artifacts": artifacts,
        **description,
        "verification": verification,
        "versions": library_versions(),
    }
    text = json.dumps(manifest, indent=2)
    (request.output / "manifests").mkdir(exist_ok=True)
    atomic_write_text(
        request.output / "manifests" / f"{request.name}-v{request.version}.json", text
    )
    atomic_write_text(request.output / "manifest.json", text)
    log.info("exported %s version %d to %s", request.name, request.version, manifest["version_dir"])
    return manifest


def described_contract(contract: dict, meanings: dict[str, str]) -> dict:
    """The manifest's `inputs` and `outputs`: each name's dtype and shape, and what it means.

    ```python
    contract = {"inputs": {"images": {"dtype": "uint8"}}, "outputs": {}}
    described = described_contract(contract, {"images": "RGB pixels 0..255"})
    assert described["inputs"]["images"] == {"dtype": "uint8", "meaning": "RGB pixels 0..255"}
    ```
    """
    return {
        side: {name: {**spec, "meaning": meanings[name]} for name, spec in contract[side].items()}
        for side in ("inputs", "outputs")
    }


def existing_versions(output: str | Path, name: str) -> set[int]:
    """Versions of `name` that any artifact or manifest under `output` already uses.

    ```python
    existing_versions("runs/quickstart/export", "byol_backbone")  # {1, 2} after two exports
    ```
    """
    output = Path(output)
    versions = set()
    if (output / name).is_dir():
        folders = (output / name).iterdir()
        versions |= {int(p.name) for p in folders if re.fullmatch(_VERSION, p.name)}
    pattern = re.compile(re.escape(name) + f"-v({_VERSION})\\.(onnx|json)")
    for folder in (output / "onnx", output / "manifests"):
        if folder.is_dir():
            matches = (pattern.fullmatch(p.name) for p in folder.iterdir())
            versions |= {int(m.group(1)) for m in matches if m}
    return versions


def convert_to_onnx(saved_model: str | Path, path: str | Path, opset: int) -> None:
    """Converts the SavedModel's serving signature to ONNX with the tf2onnx command line.

    tf2onnx 1.17's Python `from_function` turns the backbone's captured
    normalisation constants into extra graph inputs with TF 2.21; converting
    the written SavedModel gives one input, `images`, as the contract says.

    ```python
    # doctest: slow
    from byol_keras.augment.eval_transform import EvalTransform
    from byol_keras.export.signature import write_saved_model

    backbone = build_backbone("tiny", image_size=16, width=4)
    write_saved_model(backbone, None, EvalTransform(16), "export/byol_backbone/1")
    convert_to_onnx("export/byol_backbone/1", "export/onnx/byol_backbone-v1.onnx", opset=17)
    ```
    """
    command = isolated_python(
        "tf2onnx.convert",
        [
            "--saved-model",
            str(saved_model),
            "--signature_def",
            SIGNATURE_NAME,
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


def library_versions() -> dict:
    """The versions of the libraries that made the artifacts, for the manifest."""
    import keras
    import numpy as np
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


def _check_opset(opset: int) -> None:
    import tf2onnx.constants

    newest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"--opset: expected {MIN_OPSET} to {newest} (tf2onnx {tf2onnx.__version__}), "
            f"got {opset!r}"
        )


def _check_one_kind(folder: Path, formats: tuple[str, ...]) -> None:
    """Refuses to put a preset among SavedModel versions, or the other way round.

    TF Serving loads the highest integer-named folder under its base path, so
    a preset there would stop it serving.
    """
    marks = {
        "saved_model": ("saved_model.pb", "SavedModel"),
        KERAS_HUB: ("metadata.json", "preset"),
    }
    writing = next((f for f in marks if f in formats), None)
    versions = [p for p in folder.glob("*") if re.fullmatch(_VERSION, p.name) and p.is_dir()]
    for kind, (mark, what) in marks.items():
        if writing not in (None, kind) and any((p / mark).exists() for p in versions):
            theirs = marks[writing][1]
            raise UsageError(f"--name: '{folder}' holds {what} versions; give the {theirs} another")


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


def _describe(kind: str, staged: Path, destination: Path, output: Path, opset: int) -> dict:
    relative = destination.relative_to(output).as_posix()
    if kind == "onnx":
        return {"path": relative, "sha256": _sha256(staged), "opset": opset}
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    digests = {p.relative_to(staged).as_posix(): _sha256(p) for p in files}
    if kind == KERAS_HUB:
        return {"path": relative, "sha256": digests}
    return {"path": relative, "signature": SIGNATURE_NAME, "tag_set": "serve", "sha256": digests}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sweep_staging(output: Path) -> None:
    """Removes the staging folders that exports killed mid-way left in `output`.

    As the run lock does with a lock file, a folder is left behind when its
    owner record names a process of this host that no longer runs; one of
    another host's process is kept, since it cannot be checked.
    """
    for folder in output.glob(".staging-*"):
        owner = read_holder(folder / _OWNER)
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:
            continue  # its export finished meanwhile
        if holder_gone(owner) or (owner is None and age > _UNOWNED_STALE_SECONDS):
            shutil.rmtree(folder, ignore_errors=True)
            who = f"pid {owner['pid']}" if owner else "no owner record"
            log.warning("removed %s, left by an export that no longer runs (%s)", folder, who)


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
