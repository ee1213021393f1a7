"""JPEG files whose header reads but whose image data cannot be decoded, written byte by byte.

Each has a valid header (Pillow and TensorFlow's `extract_jpeg_shape` read its
size), so only a decode can tell it is broken: a baseline JPEG cut in half, a
progressive JPEG cut in half, and a progressive JPEG whose last Huffman table,
which comes between two scans, is overwritten ("Bogus Huffman table definition").
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image

BROKEN_KINDS = ("truncated", "truncated_progressive", "corrupt")


def jpeg_bytes(height: int = 40, width: int = 60, progressive: bool = False) -> bytes:
    """A noisy RGB JPEG (noise, so that the entropy-coded data is long enough to cut)."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, "JPEG", quality=90, progressive=progressive)
    return stream.getvalue()


def broken_jpeg(kind: str, height: int = 40, width: int = 60) -> bytes:
    """The bytes of a broken JPEG of `kind` (one of `BROKEN_KINDS`), `height` x `width`."""
    if kind in ("truncated", "truncated_progressive"):
        data = jpeg_bytes(height, width, progressive=kind == "truncated_progressive")
        return data[: len(data) // 2]
    data = bytearray(jpeg_bytes(height, width, progressive=True))
    # DHT: marker, 2-byte length, then the table. Entropy-coded data escapes 0xff, so
    # the last marker found is a real one, after the first scan.
    start = data.rindex(b"\xff\xc4")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    data[start + 4 : start + 2 + length] = b"\xff" * (length - 2)
    return bytes(data)


def write_broken_jpegs(folder: Path, height: int = 40, width: int = 60) -> list[Path]:
    """Writes `<kind>.jpg` for each broken kind into `folder`; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{kind}.jpg" for kind in BROKEN_KINDS]
    for kind, path in zip(BROKEN_KINDS, paths, strict=True):
        path.write_bytes(broken_jpeg(kind, height, width))
    return paths
