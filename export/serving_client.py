"""Sends image files to a TF Serving REST endpoint and prints their embeddings.

Needs only the standard library, Pillow and NumPy; not byol-keras or TensorFlow.
Each image is read as RGB uint8 at its own size (the model resizes), images of
equal size go together in one request of the row format
`{"signature_name": "serving_default", "instances": [...]}`, and each line of
output is one JSON object `{"image": path, "embedding": [...]}`.

    python export/serving_client.py --url http://localhost:8501 --model byol_backbone \\
        photos/cat.jpg photos/dog.png --output embeddings.npy
"""

import argparse
import contextlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """An image file as uint8 [height, width, 3]; grey and RGBA images become RGB."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def predict(
    url: str, model: str, images: np.ndarray, version: int | None = None, timeout: float = 60.0
) -> dict[str, np.ndarray]:
    """One row-format predict request; returns output name → array [batch, ...]."""
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    body = json.dumps({"signature_name": "serving_default", "instances": images.tolist()})
    request = urllib.request.Request(
        url.rstrip("/") + path, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            predictions = json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError):  # TF Serving's body is {"error": "..."}
            detail = json.loads(detail).get("error", detail)
        raise RuntimeError(f"HTTP {error.code} from {url}{path}: {detail}") from None
    # With several named outputs TF Serving answers one object per instance;
    # with a single output, the bare values.
    if predictions and isinstance(predictions[0], dict):
        return {
            key: np.asarray([row[key] for row in predictions], np.float32) for key in predictions[0]
        }
    return {"embeddings": np.asarray(predictions, np.float32)}


def embed_files(
    url: str,
    model: str,
    paths: list[str],
    version: int | None = None,
    size: int | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Embeddings [len(paths), D] in the order of `paths`."""
    images = [load_rgb(path, size) for path in paths]
    by_shape: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(index)
    rows: dict[int, np.ndarray] = {}
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            outputs = predict(url, model, np.stack([images[i] for i in chunk]), version)
            rows.update(zip(chunk, outputs["embeddings"], strict=True))
    return np.stack([rows[i] for i in range(len(paths))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--url", default="http://localhost:8501", help="TF Serving REST address")
    parser.add_argument("--model", default="byol_backbone", help="model name in TF Serving")
    parser.add_argument("--version", type=int, help="model version (default: the latest)")
    parser.add_argument(
        "--size", type=int, help="resize on the client first (Pillow bilinear), to send less JSON"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per request")
    parser.add_argument("--output", help="also write the embeddings to this .npy file")
    args = parser.parse_args(argv)
    try:
        embeddings = embed_files(
            args.url, args.model, args.images, args.version, args.size, args.batch_size
        )
    except (OSError, RuntimeError) as error:
        print(f"serving_client: error: {error}", file=sys.stderr)
        return 1
    for path, embedding in zip(args.images, embeddings, strict=True):
        print(json.dumps({"image": path, "embedding": embedding.tolist()}))
    if args.output:
        np.save(args.output, embeddings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
