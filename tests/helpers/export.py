"""Test helpers for export: a finished run directory, and a local TF Serving REST stand-in.

The stand-in implements the part of TF Serving's REST predict API that
`export/serving_client.py` uses (https://www.tensorflow.org/tfx/serving/api_rest):
`POST /v1/models/<name>[/versions/<n>]:predict` with `{"instances": ...}` (row
format, answered with `{"predictions": ...}`) or `{"inputs": ...}` (columnar,
answered with `{"outputs": ...}`), errors as `{"error": ...}`. It runs the
exported SavedModel's `serving_default` signature. It is not TF Serving,
which cannot be installed on the test machines.

```python
run = make_finished_run(tmp_path / "run")
run = save_as_run(my_trained_byol, tmp_path / "other_run", image_size=32)
with serve_saved_model(version_dir, "byol_backbone") as url:
    ...  # POST f"{url}/v1/models/byol_backbone:predict"
```
"""

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from byol_keras.config import from_dict, save_config
from byol_keras.methods.byol import BYOL
from byol_keras.nn.backbones import build_backbone
from byol_keras.runs import RunDirectory


def make_finished_run(
    root: Path, image_size: int = 16, source: str = "digits", precision: str = "float32"
) -> RunDirectory:
    """A run directory as training leaves it, from two real optimizer steps of a tiny BYOL.

    The steps move the weights and BatchNorm statistics away from their
    initial values, so that parity checks see a non-trivial network.
    """
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = _trained_byol(image_size)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return save_as_run(model, root, image_size, source, precision)


def save_as_run(
    model: BYOL,
    root: Path,
    image_size: int,
    source: str = "digits",
    precision: str = "float32",
) -> RunDirectory:
    """Writes `model` as a finished run (config, model.keras, backbone.keras) that export reads.

    Export reads only `data` and `train.precision` from the config; the model
    section describes the tiny CNN whatever `model` holds.
    """
    config = from_dict(
        {
            "data": {"source": source, "image_size": image_size},
            "model": {
                "backbone": "tiny",
                "width": 4,
                "projection_dim": 8,
                "projector_hidden_dim": 16,
                "predictor_hidden_dim": 16,
            },
            "train": {"epochs": 1, "batch_size": 4, "precision": precision},
        }
    )
    run = RunDirectory(root).create()
    save_config(config, run.config_path)
    model.save(run.model_path)
    model.online_backbone.save(run.backbone_path)
    run.finish({"epochs": 1})
    return run


def _trained_byol(image_size: int) -> BYOL:
    model = BYOL(
        build_backbone("tiny", image_size, width=4),
        projection_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
        total_steps=2,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    views = np.random.default_rng(0).random((8, image_size, image_size, 3)).astype("float32")
    pairs = tf.data.Dataset.from_tensor_slices((views, views[::-1])).batch(4)
    model.fit(pairs, shuffle=False, verbose=0)
    return model


class _PredictHandler(BaseHTTPRequestHandler):
    signature = None  # set on a subclass per server
    model_name = ""
    version = ""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:predict", self.path)
        if (
            not match
            or match.group(1) != self.model_name
            or match.group(2) not in (None, self.version)
        ):
            return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
        try:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            return self._reply(200, self._predict(request))
        except Exception as error:  # TF Serving answers every failure as {"error": ...}
            return self._reply(400, {"error": str(error).splitlines()[0]})

    def _predict(self, request: dict) -> dict:
        _, specs = self.signature.structured_input_signature
        ((input_name, spec),) = specs.items()
        row_format = "instances" in request
        values = request["instances"] if row_format else request["inputs"]
        if isinstance(values, dict):
            values = values[input_name]
        elif row_format and values and isinstance(values[0], dict):
            values = [instance[input_name] for instance in values]
        array = np.asarray(values)
        if spec.dtype.is_integer and array.dtype.kind not in "iu":
            raise ValueError(f"JSON value for {input_name} is not an integer")
        outputs = {
            k: v.numpy().tolist()
            for k, v in self.signature(
                **{input_name: tf.constant(array.astype(spec.dtype.as_numpy_dtype))}
            ).items()
        }
        if not row_format:
            return {"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))}
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        rows = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(rows)]}

    def _reply(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def serve_saved_model(version_dir: Path, model_name: str):
    """Serves the SavedModel at `version_dir` on 127.0.0.1 (ephemeral port); yields the URL."""
    handler = type(
        "Handler",
        (_PredictHandler,),
        {
            "signature": tf.saved_model.load(str(version_dir)).signatures["serving_default"],
            "model_name": model_name,
            "version": Path(version_dir).name,
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
