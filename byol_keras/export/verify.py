"""Reloads exported artifacts in a fresh Python process and compares them with the Keras model.

The exporting process has the Keras objects, their traced functions and
TensorFlow's caches in memory; a fresh process sees only the files, as a
server will. `run_in_fresh_process` writes the inputs to an `.npz`, runs
`python -m byol_keras.export.verify` (SavedModel through
`tf.saved_model.load`, ONNX through onnxruntime) and reads the outputs back;
`compare` applies the tolerance

    max |artifact − reference| ≤ 1e-4 × (1 + max |reference|)

per artifact, input set and output.

```python
# doctest: slow
from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.export.signature import write_saved_model

backbone = build_backbone("tiny", image_size=16, width=4)
write_saved_model(backbone, None, EvalTransform(16), "m")
images = np.zeros([2, 16, 16, 3], np.uint8)
keras_embeddings = backbone(images / 255.0).numpy()
outputs, report = run_in_fresh_process({"random": images}, {"saved_model": "m"}, ".")
checks = compare(outputs["saved_model"], {"random": {"embeddings": keras_embeddings}})
```
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# ExportError is re-exported: `from byol_keras.export.verify import ExportError` keeps working.
from byol_keras.errors import ExportError, ExportVerificationError  # noqa: F401

RELATIVE_TOLERANCE = 1e-4
TOLERANCE_RULE = "max|artifact - keras| <= 1e-4 * (1 + max|keras|), per artifact, input set, output"
VERIFY_TIMEOUT_SECONDS = 1800
# Spelled out rather than imported from byol_keras.export.signature, so that the
# verification process loads TensorFlow but never Keras or this package's models.
SIGNATURE_NAME = "serving_default"


def tolerance(reference: np.ndarray) -> float:
    """The largest admissible max |difference| for outputs of this magnitude."""
    return RELATIVE_TOLERANCE * (1.0 + float(np.max(np.abs(reference))))


def compare(outputs: dict, references: dict) -> dict:
    """Measures max |difference| per input set and output against the Keras references.

    `outputs` and `references` map set name → output name → array.
    """
    checks = {}
    for set_name, expected in references.items():
        checks[set_name] = {}
        for output_name, reference in expected.items():
            actual = outputs.get(set_name, {}).get(output_name)
            check = {"tolerance": tolerance(reference), "max_abs_reference": _max_abs(reference)}
            if actual is None or actual.shape != reference.shape:
                shape = None if actual is None else list(actual.shape)
                check.update(max_abs_diff=None, passed=False, error=f"shape {shape}")
            else:
                difference = np.abs(actual.astype(np.float64) - reference.astype(np.float64))
                # NaN compares False with everything, so it fails the check.
                worst = float(np.max(difference)) if np.all(np.isfinite(difference)) else np.inf
                check.update(max_abs_diff=worst, passed=bool(worst <= check["tolerance"]))
            checks[set_name][output_name] = check
    return checks


def failures(checks_by_artifact: dict) -> list[str]:
    """One line per failed check, e.g. `onnx/random/embeddings: 0.3 > 1.1e-04`."""
    lines = []
    for artifact, checks in checks_by_artifact.items():
        for set_name, per_output in checks.items():
            for output_name, check in per_output.items():
                if check["passed"]:
                    continue
                where = f"{artifact}/{set_name}/{output_name}"
                if "error" in check:
                    lines.append(f"{where}: {check['error']}")
                else:
                    lines.append(f"{where}: {check['max_abs_diff']:.3g} > {check['tolerance']:.2e}")
    return lines


def run_in_fresh_process(
    inputs: dict[str, np.ndarray],
    artifacts: dict[str, str | Path],
    workdir: str | Path,
    worker: str = "byol_keras.export.verify",
) -> tuple[dict, dict]:
    """Runs every artifact on every input set in a new Python process.

    Returns (outputs: artifact → set → output → array, report: the process's
    pid, library versions and the artifacts' input/output contracts).
    `worker` is the module (or script path) run with `--<artifact> PATH`.
    """
    workdir = Path(workdir)
    inputs_path, outputs_path = workdir / "verify_inputs.npz", workdir / "verify_outputs.npz"
    report_path = workdir / "verify_report.json"
    np.savez(inputs_path, **inputs)
    arguments = ["--inputs", str(inputs_path), "--outputs", str(outputs_path)]
    arguments += ["--report", str(report_path)]
    for kind, path in artifacts.items():
        arguments += [f"--{kind.replace('_', '-')}", str(path)]
    command = isolated_python(worker, arguments)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=VERIFY_TIMEOUT_SECONDS
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ExportVerificationError(
            f"the verification process could not run the artifacts: {lines[-1] if lines else ''}"
        )
    outputs: dict = {}
    with np.load(outputs_path) as arrays:
        for key in arrays.files:
            artifact, set_name, output_name = key.split("/")
            outputs.setdefault(artifact, {}).setdefault(set_name, {})[output_name] = arrays[key]
    return outputs, json.loads(report_path.read_text())


def isolated_python(module: str, arguments: list[str]) -> list[str]:
    """The command `python -m <module> <arguments>`, isolated from the current directory.

    `python -m` puts the working directory first on `sys.path`, so a stray
    `numpy.py` there would be imported. `-I` leaves it (and PYTHON*
    variables) out; the parent's own import path, less relative entries and
    the working directory, and this package's root are put back explicitly,
    so the child imports the same packages as the parent. (`-P` would do
    this more simply but needs Python 3.11.) A `module` ending in `.py` is
    a script's path, run without importing this package (`hub_verify.py`).

    ```python
    command = isolated_python("byol_keras.export.verify", ["--inputs", "in.npz", ...])
    ```
    """
    working_dir = os.path.realpath(os.getcwd())
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [package_root] + [
        entry
        for entry in sys.path
        if os.path.isabs(entry) and os.path.realpath(entry) != working_dir
    ]
    run = (
        f"runpy.run_path({module!r}, run_name='__main__')"
        if module.endswith(".py")
        else f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    bootstrap = f"import runpy, sys; sys.path[:0] = {list(dict.fromkeys(paths))!r}; {run}"
    return [sys.executable, "-I", "-c", bootstrap, *arguments]


def _max_abs(array: np.ndarray) -> float:
    return float(np.max(np.abs(array))) if array.size else 0.0


def _run_saved_model(path: str, inputs: dict) -> tuple[dict, dict]:
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures[SIGNATURE_NAME]
    _, input_specs = signature.structured_input_signature
    contract = {
        "inputs": {k: _tf_spec(spec) for k, spec in input_specs.items()},
        "outputs": {k: _tf_spec(spec) for k, spec in signature.structured_outputs.items()},
    }
    outputs = {}
    for set_name, images in inputs.items():
        result = signature(**{next(iter(input_specs)): tf.constant(images)})
        outputs[set_name] = {name: value.numpy() for name, value in result.items()}
    return outputs, contract


def _tf_spec(spec) -> dict:
    return {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}


def _run_onnx(path: str, inputs: dict) -> tuple[dict, dict]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    contract = {
        "inputs": {node.name: _onnx_spec(node) for node in session.get_inputs()},
        "outputs": {node.name: _onnx_spec(node) for node in session.get_outputs()},
    }
    names = [node.name for node in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    outputs = {}
    for set_name, images in inputs.items():
        values = session.run(names, {input_name: images})
        outputs[set_name] = dict(zip(names, values, strict=True))
    return outputs, contract


def _onnx_spec(node) -> dict:
    dtypes = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(int32)": "int32"}
    dtype = dtypes.get(node.type, node.type)
    return {"dtype": dtype, "shape": [d if isinstance(d, int) else None for d in node.shape]}


def main(argv: list[str] | None = None) -> int:
    """The verification process: `python -m byol_keras.export.verify --inputs X.npz ...`."""
    parser = argparse.ArgumentParser(prog="python -m byol_keras.export.verify")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--outputs", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--saved-model")
    parser.add_argument("--onnx")
    args = parser.parse_args(argv)
    with np.load(args.inputs) as arrays:
        inputs = {name: arrays[name] for name in arrays.files}
    runners = {"saved_model": (_run_saved_model, args.saved_model), "onnx": (_run_onnx, args.onnx)}
    arrays, report = {}, {"pid": os.getpid(), "contracts": {}, "versions": {}}
    for artifact, (runner, path) in runners.items():
        if path is None:
            continue
        outputs, report["contracts"][artifact] = runner(path, inputs)
        for set_name, values in outputs.items():
            for output_name, value in values.items():
                arrays[f"{artifact}/{set_name}/{output_name}"] = value
    report["versions"] = _library_versions()
    np.savez(args.outputs, **arrays)
    Path(args.report).write_text(json.dumps(report, indent=2))
    return 0


def _library_versions() -> dict:
    versions = {"python": sys.version.split()[0], "numpy": np.__version__}
    for module in ("tensorflow", "onnxruntime"):
        if module in sys.modules:
            versions[module] = sys.modules[module].__version__
    return versions


if __name__ == "__main__":
    sys.exit(main())
