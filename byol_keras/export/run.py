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
# doctest: slow
manifest = export_run("runs/quickstart", formats=("saved_model", "onnx"))
manifest["version_dir"]    # runs/quickstart/export/byol_backbone/1
manifest["verification"]   # {"passed": True, "saved_model": {...}, "onnx": {...}}
```
"""

import logging
from pathlib import Path

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.config import load_config
from byol_keras.errors import ExportError, ExportVerificationError, UsageError
from byol_keras.export import signature as serving
from byol_keras.export.parity import verify_artifacts
from byol_keras.export.publish import (
    FORMATS,
    KERAS_HUB,
    MIN_OPSET,
    check_request,
    convert_to_onnx,
    described_contract,
    existing_versions,
    publish,
)
from byol_keras.export.verify import RELATIVE_TOLERANCE, TOLERANCE_RULE
from byol_keras.runs import RunDirectory, load_networks
from byol_keras.tasks import dense_tasks, listed

__all__ = [
    "ExportError",
    "ExportVerificationError",
    "convert_to_onnx",
    "existing_versions",
    "export_run",
]

log = logging.getLogger(__name__)


def export_run(
    run_dir: str | Path,
    formats: tuple[str, ...] = FORMATS,
    output: str | Path | None = None,
    name: str | None = None,
    version: int | None = None,
    opset: int = MIN_OPSET,
    model: str = "backbone",
    **results: str | None,
) -> dict:
    """Exports the run's online backbone, verifies every artifact, and returns the manifest.

    Raises `UsageError` for a missing or unfinished run, a bad name, format or
    opset, or a version that already exists; `ExportVerificationError` when a
    reloaded artifact disagrees with the Keras backbone beyond the tolerance;
    `ExportError` when tf2onnx cannot convert the model.

    Args:
        run_dir: A finished run directory.
        formats: Any of `"saved_model"` and `"onnx"`; or `"keras_hub"` alone,
            a KerasHub preset of the backbone (`hub.py`).
        output: The export root; default: `<run>/export`.
        name: The model name in the TF Serving layout; default `byol_backbone`,
            `byol_segmenter` or `byol_detector` (`byol_backbone_keras_hub` for a preset).
        version: The version folder; default: one above the highest present.
        opset: The ONNX opset, from 17 to the newest the installed tf2onnx knows.
        model: `"backbone"`, or the network a dense task kept (`tasks.py`):
            `"segmenter"` (`evaluate --protocol segment`) or `"detector"`
            (`--protocol detect`), exported by `transfer/<task>/export.py`.
        **results: Which of the task's results, under the name of its model:
            `segmenter="segment-10pct"`, `detector="detect-10pct"` (default:
            `segment` or `detect`, or the only one there is).

    Returns:
        The manifest written beside the artifacts: their paths, the measured
        parity and the verification process.

    ```python
    # doctest: slow
    manifest = export_run("runs/quickstart", formats=("onnx",), version=3, opset=18)
    assert manifest["artifacts"]["onnx"]["path"] == "onnx/byol_backbone-v3.onnx"
    ```
    """
    kept = {task.model: task for task in dense_tasks()}
    unknown = set(results) - set(kept)
    if unknown:
        raise TypeError(f"export_run() got an unexpected keyword argument {unknown.pop()!r}")
    run = RunDirectory(run_dir).require_finished()
    if model != "backbone" and model not in kept:
        raise UsageError(f"--model: expected {listed(['backbone', *kept])}, got {model!r}")
    if KERAS_HUB in formats and model != "backbone":
        raise UsageError(f"--format keras-hub: exports the backbone only, not --model {model}")
    if model in kept:
        task = kept[model]
        # Refuse a missing result before anything is written.
        result = run.find_result(task.protocol, results.get(model), f"--{model}")
    output = Path(output) if output is not None else run.root / "export"
    # Its own default name: TF Serving would try to serve a preset among SavedModel versions.
    name = name or (f"byol_{model}_keras_hub" if KERAS_HUB in formats else f"byol_{model}")
    request = check_request(formats, output, name, version, opset)
    if model in kept:
        # Imported when used: KerasCV takes seconds to import, and only the detector needs it.
        return task.module("export").export_model(run, request, *result)

    config = load_config(run.config_path)
    if KERAS_HUB in formats:
        return _export_keras_hub(run, request, config)
    transform = EvalTransform.from_config(config)
    backbone, projector = load_networks(run)

    def write_saved_model(path: Path) -> None:
        log.info("writing SavedModel (%s)", transform.describe()["description"])
        serving.write_saved_model(backbone, projector, transform, path)

    def verify(staged: dict, workdir: Path) -> dict:
        return verify_artifacts(config, staged, backbone, projector, workdir)

    description = {
        "model": "backbone",
        **_contract_section(serving.contract(backbone, projector, transform.image_size), transform),
        "precision": {"trained": config.train.precision, "exported": "float32"},
    }
    return publish(request, run, write_saved_model, verify, description)


def _export_keras_hub(*arguments) -> dict:
    # Imported when used: keras-hub is an optional extra.
    from byol_keras.export.hub import export_preset

    return export_preset(*arguments)


def _contract_section(contract: dict, transform: EvalTransform) -> dict:
    meanings = {
        serving.INPUT_NAME: "RGB pixels 0..255, any height and width",
        serving.EMBEDDINGS: "online backbone features",
        serving.PROJECTIONS: "online projector applied to the embeddings",
    }
    return {
        **described_contract(contract, meanings),
        "preprocessing": f"cast to float32, divide by 255; "
        f"{transform.describe()['description']}; the backbone standardises with the "
        "ImageNet mean/std inside",
        "image_size": transform.image_size,
        "eval_transform": transform.describe(),
        "tolerance": {"rule": TOLERANCE_RULE, "relative": RELATIVE_TOLERANCE},
    }
