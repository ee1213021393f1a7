"""`byol-keras embed`: embeddings equal the exported SavedModel's, rows match the files."""

import csv
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.cli import main
from byol_keras.data import load_source
from byol_keras.evaluation.embed import _NpyWriter, embed_run
from byol_keras.evaluation.features import source_arrays
from byol_keras.export.signature import write_saved_model
from byol_keras.export.verify import RELATIVE_TOLERANCE
from byol_keras.runs import RunDirectory, load_networks
from tests.helpers.export import make_finished_run

SIZE = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("run"), image_size=SIZE)


def read_listing(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_embeddings_equal_the_saved_models(run, tmp_path):
    backbone, projector = load_networks(run)
    write_saved_model(backbone, projector, EvalTransform(SIZE), tmp_path / "saved_model")
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    images, labels = source_arrays(load_source("digits", split="test", image_size=SIZE))
    expected = serve(images=tf.constant(images))

    for what, output in (("backbone", "embeddings"), ("projection", "projections")):
        path = tmp_path / f"{what}.npy"
        result = embed_run(run.root, "digits", path, batch_size=100, what=what, splits=["test"])
        reference = expected[output].numpy()
        rows = np.load(path)
        assert rows.dtype == np.float32 and rows.shape == reference.shape
        assert result["rows"] == len(images) and result["skipped_files"] == 0
        tolerance = RELATIVE_TOLERANCE * (1 + np.abs(reference).max())
        assert np.abs(rows - reference).max() <= tolerance, what

    listing = read_listing(tmp_path / "backbone.csv")
    assert [int(line["row"]) for line in listing] == list(range(len(images)))
    assert [int(line["index"]) for line in listing] == list(range(len(images)))
    assert [int(line["label"]) for line in listing] == labels.tolist()
    assert {line["split"] for line in listing} == {"test"}


def write_folder(root):
    """train/ and test/ with class folders of distinct flat-colour PNGs, and one broken file."""
    files = {}
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                colour = (40 * i + (100 if name == "dog" else 0), 30 * len(files), 200)
                path = folder / f"{i}.png"
                Image.new("RGB", (SIZE, SIZE), colour).save(path)
                files[path] = (split, name)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    return files


def test_folder_rows_follow_the_files_and_skip_the_broken_one(run, tmp_path, capsys):
    files = write_folder(tmp_path / "photos")
    output = tmp_path / "out" / "photos.npy"
    output.parent.mkdir()

    code = main(["embed", "--run", str(run.root), "--data", f"folder:{tmp_path / 'photos'}",
                 "--output", str(output), "--batch-size", "3"])  # fmt: skip

    assert code == 0
    assert "embedded 10 images (backbone, " in capsys.readouterr().out
    listing = read_listing(output.with_suffix(".csv"))
    expected = sorted(files, key=lambda path: (["train", "test"].index(files[path][0]), path))
    assert [line["path"] for line in listing] == [str(path) for path in expected]
    assert [(line["split"], line["class"]) for line in listing] == [files[p] for p in expected]
    assert [int(line["label"]) for line in listing] == [
        ["cat", "dog"].index(files[p][1]) for p in expected
    ]
    backbone, _ = load_networks(run)
    pixels = np.stack([np.asarray(Image.open(path)) for path in expected]) / 255.0
    np.testing.assert_allclose(np.load(output), backbone(pixels), atol=1e-5)
    assert sorted(p.name for p in output.parent.iterdir()) == ["photos.csv", "photos.npy"]


def test_a_broken_file_is_counted_as_skipped(run, tmp_path):
    write_folder(tmp_path / "photos")
    result = embed_run(run.root, f"folder:{tmp_path / 'photos'}", tmp_path / "e.npy")
    assert (result["rows"], result["skipped_files"]) == (10, 1)
    assert result["splits"] == ["train", "test"]


def test_parquet_holds_the_same_table(run, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    embed_run(run.root, "digits", tmp_path / "e.npy", splits=["test"])
    embed_run(run.root, "digits", tmp_path / "e.parquet", splits=["test"], batch_size=64)

    table = pq.read_table(tmp_path / "e.parquet").to_pydict()
    listing = read_listing(tmp_path / "e.csv")
    expected = np.load(tmp_path / "e.npy")
    # The two files were embedded in batches of 256 and 64: the convolution and matmul kernels
    # may split and sum the last, partial batch in another order, and a float32 sum
    # reordered moves by a few units in the last place of its largest terms. 4 such units of
    # the largest feature allow that (seen: 4.8e-7 on features up to ~13, about 0.3 of one);
    # a row out of place or another network would be off by the features themselves.
    tolerance = 4 * np.finfo(np.float32).eps * np.abs(expected).max()
    np.testing.assert_allclose(
        np.array(table["embedding"], np.float32), expected, rtol=0, atol=tolerance
    )
    assert table["label"] == [int(line["label"]) for line in listing]
    assert table["row"] == list(range(len(listing)))


def test_parquet_without_pyarrow_says_how_to_install_it(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    code = main(["embed", "--run", str(run.root), "--data", "digits",
                 "--output", str(tmp_path / "e.parquet")])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.count("\n") == 0 and "pip install pyarrow" in error
    assert not list(tmp_path.iterdir())


def test_an_unfinished_run_is_refused(tmp_path, capsys):
    RunDirectory(tmp_path / "run").create()
    code = main(["embed", "--run", str(tmp_path / "run"), "--data", "digits",
                 "--output", str(tmp_path / "e.npy")])  # fmt: skip
    assert code == 2
    assert "not a finished run" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


def test_fewer_rows_than_announced_get_a_corrected_header(tmp_path):
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    with _NpyWriter(tmp_path / "e.npy", rows=5, dim=4, name_column="index") as writer:
        writer.append(0, rows, np.arange(3), np.zeros(3, np.int32), None, "all")
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), rows)
    assert len(read_listing(tmp_path / "e.csv")) == 3


def test_a_segfolder_without_split_embeds_its_split_folders_and_blames_split(run, tmp_path):
    # Review defect 7: embed without --split asked the segfolder for split 'all' and
    # blamed data.split, which the user never set.
    from byol_keras.errors import UsageError
    from tests.helpers.segfolder import make_segfolder

    root = make_segfolder(tmp_path / "seg", splits=("train", "test"), per_split=2)
    result = embed_run(run.root, f"segfolder:{root}", tmp_path / "e.npy", progress=False)
    assert result["splits"] == ["test", "train"] and result["rows"] == 4
    with pytest.raises(UsageError, match=r"^--split: segfolder .* has no split 'val'"):
        embed_run(run.root, f"segfolder:{root}", tmp_path / "f.npy", splits=["val"])
