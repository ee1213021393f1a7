"""`byol-keras embed`: the embeddings of every image of a source, streamed to a file.

Writes `<output>.npy` (float32 [rows, D]) and a sidecar `<output>.csv` with
one line per row: `row`, then `path` (folder sources) or `index` (the
example's position in its split), `label` (-1 when unlabelled), `class` and
`split`. An output ending in `.parquet` gets one table with the same columns
and an `embedding` column instead, when pyarrow is installed. Rows follow the
source's order, split after split.

The embeddings are those of the exported SavedModel: the same float32
networks (`runs.load_networks`) after the same evaluation transform
(`augment/eval_transform.py`: by default the short side resized, then the
central square, antialiased), applied to each image at its own size.
Memory is flat: one batch of images and embeddings at a time, appended to
a file whose `.npy` header was written for the announced row count. Files
the source's up-front check skipped, and files that fail to decode
meanwhile, are counted and reported.

```python
result = embed_run("runs/quickstart", "folder:~/photos", "photos.npy")
assert (result["rows"], result["skipped_files"]) == (3, 0)
```
"""

import csv
import logging
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.data.folder import SPLIT_NAMES
from byol_keras.data.segfolder import split_folders
from byol_keras.errors import UsageError
from byol_keras.evaluation.features import Embedder
from byol_keras.runs import RunDirectory, load_networks

log = logging.getLogger(__name__)

WHAT = ("backbone", "projection")
FORMATS = (".npy", ".parquet")
_COPY_ROWS = 65_536


def embed_run(
    run_dir,
    data: str,
    output,
    batch_size: int = 256,
    what: str = "backbone",
    splits: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Embeds every image of `data` with a finished run's network and writes them to `output`.

    Args:
        run_dir: A finished run directory.
        data: A source spec (`digits`, `folder:`, `npz:`, `tfds:`); it need
            not have labels. Images get the run's evaluation transform.
        output: A `.npy` file (plus a `.csv` beside it) or a `.parquet` file.
        batch_size: Images per forward pass.
        what: `"backbone"` (the representation) or `"projection"` (the
            online projector's output).
        splits: The splits to embed, in order; default: all of the source's
            (`all` for digits and tfds, the split folders of a folder,
            `train` and `test` of an npz file).
        progress: Whether to draw a progress bar on a terminal's stderr.

    Returns:
        `rows`, `dim`, `skipped_files`, `splits`, `output` and `listing` (the
        CSV; equal to `output` for parquet).

    ```python
    embed_run("runs/mnist", "npz:mnist.npz", "mnist.npy", splits=["test"], what="projection")
    ```
    """
    output = Path(output)
    writer_class = _writer_for(output)
    if what not in WHAT:
        raise UsageError(f"--what: expected backbone or projection, got {what!r}")
    if batch_size < 1:
        raise UsageError(f"--batch-size: must be at least 1, got {batch_size}")
    run = RunDirectory(run_dir).require_finished()
    config = load_config(run.config_path)
    sources = [
        (label, source_from_config(config, data, split)) for label, split in _splits(data, splits)
    ]
    embedder = Embedder(_network(run, what), batch_size, EvalTransform.from_config(config))
    dim = int(embedder.backbone.output_shape[-1])
    expected = sum(source.num_examples for _, source in sources)
    written = 0
    started = time.perf_counter()
    bar = _Progress(expected, enabled=progress)
    name_column = "path" if sources[0][1].key_path is not None else "index"
    with writer_class(output, expected, dim, name_column) as writer:
        for split, source in sources:
            for images, labels, names in _named_batches(source, embedder, batch_size):
                names, labels = names.numpy(), labels.numpy()
                features = embedder.embed_batch(images)
                writer.append(written, features, names, labels, source.class_names, split)
                written += len(labels)
                bar.update(written)
        bar.done()
        skipped = sum(source.skipped_files for _, source in sources) + expected - written
        if written < expected:
            log.warning(
                "%d image(s) could not be decoded while embedding; skipped", expected - written
            )
        if written == 0:
            raise UsageError(f"--data: {data} yielded no images to embed")
    return {
        "rows": written,
        "dim": dim,
        "what": what,
        "skipped_files": skipped,
        "splits": [split for split, _ in sources],
        "output": str(output),
        "listing": str(writer.listing),
        "wall_time_seconds": time.perf_counter() - started,
    }


def _writer_for(output: Path):
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--output: expected a .npy or .parquet file, got '{output}'")
    if not output.parent.is_dir():
        raise UsageError(f"--output: folder '{output.parent}' does not exist")
    if output.is_dir():
        raise UsageError(f"--output: '{output}' is a folder")
    if suffix == ".npy":
        return _NpyWriter
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError("--output: writing .parquet needs pyarrow: pip install pyarrow") from None
    return _ParquetWriter


def _splits(spec: str, splits: list[str] | None) -> list[tuple[str, str]]:
    """(name written to the listing, split to load) for each split to embed."""
    prefix, _, rest = spec.strip().partition(":")
    if splits and prefix == "segfolder" and split_folders(rest):
        present = split_folders(rest)
        for split in splits:
            missing = [part for part in split.split("+") if part not in present]
            if missing:
                raise UsageError(
                    f"--split: segfolder '{rest}' has no split '{missing[0]}' "
                    f"(splits found: {', '.join(present)})"
                )
    if splits:
        return [(split, split) for split in splits]
    if prefix == "folder":
        base = os.path.expanduser(rest)
        present = [name for name in SPLIT_NAMES if os.path.isdir(os.path.join(base, name))]
        # Without split folders any split name reads the whole folder.
        return [(name, name) for name in present] or [("all", SPLIT_NAMES[0])]
    if prefix == "segfolder":
        # The split folders there are; a missing one is then --split's fault, not data.split's.
        return [(name, name) for name in split_folders(rest)] or [("all", "all")]
    if prefix == "npz":
        try:
            with np.load(os.path.expanduser(rest), allow_pickle=False) as archive:
                present = [s for s in ("train", "test") if f"x_{s}" in archive.files]
        except (OSError, ValueError):
            present = []  # loading the source says what is wrong
        return [(split, split) for split in present or ["train"]]
    return [("all", "all")]  # digits, and tfds's union of every split


def _network(run: RunDirectory, what: str) -> keras.Model:
    """The exported function's network: float32 backbone, or backbone then projector."""
    backbone, projector = load_networks(run)
    if what == "backbone":
        return backbone
    images = keras.Input(backbone.input_shape[1:])
    return keras.Model(images, projector(backbone(images)), name="backbone_projector")


def _named_batches(source, embedder: Embedder, batch_size: int) -> tf.data.Dataset:
    """Batches of (images, labels, each example's path or index), in the source's order.

    The name travels with the image through decoding, so a file that fails
    to decode drops its own row and no other. Images of varying size are
    transformed one by one before batching (`Embedder.batchable`).
    """

    def decode(index, key):
        image, label = source.decode(*key) if isinstance(key, tuple) else source.decode(key)
        if source.key_path is None:
            name = index
        else:
            name = source.key_path(*key) if isinstance(key, tuple) else source.key_path(key)
        return image, label, name

    examples = source.keys.enumerate().map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    examples = embedder.batchable(examples.ignore_errors(log_warning=True))
    return examples.batch(batch_size).prefetch(2)


class _NpyWriter:
    """A `.npy` file written batch by batch, and its CSV listing, both moved into place at the end.

    The header announces `rows`; should fewer arrive (a file vanished while
    embedding), the rows are copied once more under a corrected header.
    """

    def __init__(self, output: Path, rows: int, dim: int, name_column: str):
        self.output, self.rows, self.dim = output, rows, dim
        self.listing = output.with_suffix(".csv")
        self._name_column = name_column

    def __enter__(self):
        self._array_path, self._csv_path = _partial(self.output), _partial(self.listing)
        self._array = open(self._array_path, "xb")
        self._csv = open(self._csv_path, "x", newline="")
        self._header_size = self._write_header(self._array, self.rows)
        self._table = csv.writer(self._csv)
        self._table.writerow(["row", self._name_column, "label", "class", "split"])
        return self

    def _write_header(self, stream, rows: int) -> int:
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, self.dim)}
        np.lib.format.write_array_header_1_0(stream, header)
        return stream.tell()

    def append(self, row: int, features, names, labels, class_names, split: str) -> None:
        self._array.write(np.ascontiguousarray(features, "<f4").tobytes())
        for offset, (name, label) in enumerate(zip(names, labels, strict=True)):
            self._table.writerow(
                [row + offset, _text(name), int(label), _class(class_names, label), split]
            )

    def __exit__(self, kind, error, traceback):
        try:
            if error is None:
                written = (self._array.tell() - self._header_size) // (4 * self.dim)
                if written != self.rows:
                    self._rewrite(written)
                for stream, partial, path in (
                    (self._array, self._array_path, self.output),
                    (self._csv, self._csv_path, self.listing),
                ):
                    stream.flush()
                    os.fsync(stream.fileno())
                    stream.close()
                    os.replace(partial, path)
        finally:
            for stream, partial in ((self._array, self._array_path), (self._csv, self._csv_path)):
                stream.close()
                partial.unlink(missing_ok=True)

    def _rewrite(self, rows: int) -> None:
        self._array.close()
        shorter = _partial(self.output, "short")
        with open(self._array_path, "rb") as old, open(shorter, "xb") as new:
            old.seek(self._header_size)
            self._write_header(new, rows)
            for _ in range(0, rows, _COPY_ROWS):
                new.write(old.read(_COPY_ROWS * 4 * self.dim))
        os.replace(shorter, self._array_path)
        self._array = open(self._array_path, "ab")  # noqa: SIM115 (closed in __exit__)


class _ParquetWriter:
    """One parquet table, a row group per batch, moved into place at the end."""

    def __init__(self, output: Path, rows: int, dim: int, name_column: str):
        self.output, self.dim, self.listing = output, dim, output
        self._name_column = name_column

    def __enter__(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._partial = _partial(self.output)
        schema = pa.schema(
            [
                ("row", pa.int64()),
                (self._name_column, pa.string() if self._name_column == "path" else pa.int64()),
                ("label", pa.int32()),
                ("class", pa.string()),
                ("split", pa.string()),
                ("embedding", pa.list_(pa.float32(), self.dim)),
            ]
        )
        self._writer = pq.ParquetWriter(str(self._partial), schema)
        return self

    def append(self, row: int, features, names, labels, class_names, split: str) -> None:
        import pyarrow as pa

        columns = [
            pa.array(np.arange(row, row + len(labels), dtype=np.int64)),
            pa.array([_text(name) for name in names] if self._name_column == "path" else names),
            pa.array(labels.astype(np.int32)),
            pa.array([_class(class_names, label) for label in labels]),
            pa.array([split] * len(labels)),
            pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(features, np.float32).reshape(-1)), self.dim
            ),
        ]
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self._writer.schema))

    def __exit__(self, kind, error, traceback):
        try:
            self._writer.close()
            if error is None:
                os.replace(self._partial, self.output)
        finally:
            self._partial.unlink(missing_ok=True)


def _partial(path: Path, tag: str = "partial") -> Path:
    """A hidden name beside `path`; `open(..., "x")` gives it the mode `np.save` would."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def _text(name) -> str:
    return os.fsdecode(name) if isinstance(name, bytes) else str(name)


def _class(class_names, label) -> str:
    return class_names[label] if class_names and 0 <= label < len(class_names) else ""


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.started, self.shown = total, time.perf_counter(), 0.0
        self.enabled = enabled and sys.stderr.isatty()

    def update(self, count: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.shown < 0.2:
            return
        self.shown = now
        rate = count / max(now - self.started, 1e-9)
        filled = int(30 * count / max(self.total, 1))
        sys.stderr.write(
            f"\r[{'=' * filled}{'.' * (30 - filled)}] {count}/{self.total} ({rate:.0f} images/s)"
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


__all__ = ["embed_run"]
