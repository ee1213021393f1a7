"""Embeds every image in a folder with the exported ONNX model and writes a .npy file.

Needs only onnxruntime, Pillow and NumPy; not byol-keras or TensorFlow. Images
are read as RGB uint8 at their own size (the model resizes them to the training
size), batched by size, and written as float32 [N, D] in sorted path order;
`<output>.txt` lists the image paths, one per row of the array.

    python export/onnx_embed.py export/onnx/byol_backbone-v1.onnx photos/ --output photos.npy
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_paths(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, in sorted order."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def embed_folder(
    model: str | Path, folder: str | Path, batch_size: int = 64, output_name: str = "embeddings"
) -> tuple[np.ndarray, list[Path]]:
    """Embeddings [N, D] of the images under `folder`, and their paths in row order.

    ```python
    embeddings, paths = embed_folder("byol_backbone-v1.onnx", "photos/")
    ```
    """
    if not Path(model).is_file():
        raise FileNotFoundError(f"no ONNX model at {model}")
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    paths = image_paths(folder)
    if not paths:
        raise FileNotFoundError(f"no image files under {folder}")
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    by_shape: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(index)
    rows: dict[int, np.ndarray] = {}
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            (values,) = session.run(
                [output_name], {input_name: np.stack([images[i] for i in chunk])}
            )
            rows.update(zip(chunk, values, strict=True))
    return np.stack([rows[i] for i in range(len(paths))]).astype(np.float32), paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the exported .onnx file")
    parser.add_argument("folder", help="folder of image files (searched recursively)")
    parser.add_argument("--output", default="embeddings.npy", help=".npy file to write")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--output-name", default="embeddings", choices=("embeddings", "projections")
    )
    args = parser.parse_args(argv)
    try:
        embeddings, paths = embed_folder(args.model, args.folder, args.batch_size, args.output_name)
    except OSError as error:  # a missing model or folder, an unreadable image
        print(f"onnx_embed: error: {error}", file=sys.stderr)
        return 1
    output = Path(args.output)
    np.save(output, embeddings)
    output.with_suffix(".txt").write_text("".join(f"{p}\n" for p in paths))
    print(
        f"{len(paths)} images -> {output} {embeddings.shape}, paths in {output.with_suffix('.txt')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
