"""Hostile or odd input files: FIFOs, links out of the tree, huge files, PNG bombs, bad npz labels.

Every case is a real file in tmp_path: a FIFO made with os.mkfifo, real
symbolic links, PNG bombs written byte by byte, `.npz` files written with NumPy.
"""

import logging
import os
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras.cli import main
from byol_keras.config import DataConfig
from byol_keras.data import load_source
from byol_keras.data.image_files import list_image_files, pillow_decode
from byol_keras.data.source import MAX_CLASSES, decode_rgb
from byol_keras.errors import UsageError
from tests.helpers.broken_jpegs import jpeg_bytes, write_broken_jpegs
from tests.helpers.exif import STORED_TURNS, quadrants, save_turned_jpeg

WATCHDOG_SECONDS = 60


def _save(path, size=(6, 6), rgb=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png_bomb(path, width: int, height: int):
    """A valid 1-bit grey PNG of width x height black pixels, compressed to a few hundred KB.

    Written row block by row block, so building it never holds the raw image.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then packed pixels
    compressor = zlib.compressobj(9)
    block = row * 1000
    pieces = [compressor.compress(block) for _ in range(height // 1000)]
    pieces.append(compressor.compress(row * (height % 1000)) + compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(pieces))
        + _png_chunk(b"IEND", b"")
    )
    return path


def _load_with_watchdog(spec: str, fifos=(), **options):
    """load_source in a thread; fails the test, rather than hanging it, when loading blocks.

    A reader blocked on a FIFO is released by opening the FIFO's other end.
    """
    result = {}

    def load():
        try:
            result["source"] = load_source(spec, **options)
        except BaseException as error:  # handed to the test below
            result["error"] = error

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(WATCHDOG_SECONDS)
    if thread.is_alive():
        for fifo in fifos:
            for _ in range(100):  # until every blocked reader has been released
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    break
        thread.join(WATCHDOG_SECONDS)
        pytest.fail(f"loading {spec} blocked for {WATCHDOG_SECONDS} s")
    if "error" in result:
        raise result["error"]
    return result["source"]


def _warnings_text(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def _labels(source) -> list[int]:
    return [int(label) for _, label in source.dataset.as_numpy_iterator()]


# Item 5: only regular files are read.


def test_a_fifo_named_like_an_image_is_skipped_without_being_opened(tmp_path, caplog):
    _save(tmp_path / "good.png")
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        source = _load_with_watchdog(f"folder:{tmp_path}", [fifo], image_size=8)
    assert (source.num_examples, source.skipped_files) == (1, 1)
    assert len(_labels(source)) == 1
    assert "x.png: not a regular file (a FIFO)" in _warnings_text(caplog)


def test_a_link_to_a_device_is_skipped_as_not_a_regular_file(tmp_path, caplog):
    _save(tmp_path / "good.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        source = _load_with_watchdog(f"folder:{tmp_path}", image_size=8)
    assert (source.num_examples, source.skipped_files) == (1, 2)
    assert len(_labels(source)) == 1
    text = _warnings_text(caplog)
    assert "zero.png: not a regular file (a character device)" in text
    assert "dangling.png: cannot read" in text


def test_folder_links_are_followed_inside_the_tree_only(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _save(root / "cat" / "a.png")
    _save(outside / "secret.png")
    _save(outside / "dog" / "b.png")
    (root / "alias").symlink_to(root / "cat")  # inside the tree: followed
    (root / "escape").symlink_to(outside)  # out of the tree: not followed
    (root / "cat" / "loop").symlink_to(root)  # a loop back to the root
    (root / "linked_file.png").symlink_to(outside / "dog" / "b.png")  # a regular file: read
    # The real folder is listed before the link to it, and only once.
    assert list_image_files(str(root)) == ["cat/a.png", "linked_file.png"]

    (root / "everything").symlink_to("/")
    assert "everything" not in " ".join(list_image_files(str(root)))
    source = _load_with_watchdog(f"folder:{root}", image_size=8)
    assert source.num_examples == 2 and source.skipped_files == 0


def test_a_split_may_link_to_class_folders_elsewhere_in_the_data_set(tmp_path):
    _save(tmp_path / "all" / "cat" / "a.png")
    _save(tmp_path / "test" / "cat" / "b.png")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "cat").symlink_to(tmp_path / "all" / "cat")
    source = load_source(f"folder:{tmp_path}", split="train", image_size=8)
    assert source.num_examples == 1 and source.class_names == ["cat"]


def test_files_over_the_size_limit_are_skipped_and_counted(tmp_path, caplog):
    _save(tmp_path / "small.png", size=(2, 2))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    limit_bytes = (tmp_path / "small.png").stat().st_size + 100
    assert (tmp_path / "big.png").stat().st_size > limit_bytes
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        source = load_source(f"folder:{tmp_path}", image_size=8, max_file_mb=limit_bytes / 2**20)
    assert (source.num_examples, source.skipped_files) == (1, 1)
    assert len(_labels(source)) == 1
    assert "big.png: 0.0 MiB, over the limit of" in _warnings_text(caplog)
    assert "(data.max_file_mb)" in _warnings_text(caplog)
    # At the default limit both files are read.
    assert load_source(f"folder:{tmp_path}", image_size=8).num_examples == 2


# Item 6: decompression bombs are skipped from their header, never decoded.


def test_png_bombs_are_skipped_from_the_header_without_pillow_warnings(tmp_path, caplog):
    _save(tmp_path / "good.png")
    huge = _png_bomb(tmp_path / "huge.png", 20000, 20000)  # over 2x Pillow's limit: its error
    large = _png_bomb(tmp_path / "large.png", 10000, 10000)  # over Pillow's limit: its warning
    assert huge.stat().st_size < 400_000 and large.stat().st_size < 400_000
    with pytest.raises(Image.DecompressionBombError):  # Pillow itself refuses it
        Image.open(huge)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(large) as opened:
            assert opened.size == (10000, 10000)

    with (
        caplog.at_level(logging.WARNING, logger="byol_keras"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        source = load_source(f"folder:{tmp_path}", image_size=8)

    assert (source.num_examples, source.skipped_files) == (1, 2)
    # The check decided what the pipeline decodes: nothing is dropped later.
    assert len(_labels(source)) == source.num_examples
    text = _warnings_text(caplog)
    assert "large.png: 10000x10000 = 100,000,000 pixels, over the limit of 89,478,485" in text
    assert "huge.png: Image size (400000000 pixels) exceeds limit" in text
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_truncated_and_corrupt_jpegs_are_skipped_and_counted_up_front(tmp_path, caplog):
    for name in ("a", "b"):
        (tmp_path / f"{name}.jpg").write_bytes(jpeg_bytes())
    broken = write_broken_jpegs(tmp_path)
    for path in broken:  # each has a good header, but TensorFlow and Pillow refuse to decode it
        header = tf.image.extract_jpeg_shape(tf.io.read_file(str(path)))
        assert header.numpy().tolist() == [40, 60, 3]
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode_rgb(tf.io.read_file(str(path)))
        with pytest.raises(OSError):
            pillow_decode(str(path))
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        source = load_source(f"folder:{tmp_path}", image_size=8)
    assert (source.num_examples, source.skipped_files) == (2, 3)
    # The check decided what the pipeline decodes: nothing is dropped later.
    assert len(_labels(source)) == source.num_examples
    text = _warnings_text(caplog)
    assert all(f"{path.name}: " in text for path in broken), text


def test_photos_that_exif_turns_are_decoded_as_displayed(tmp_path):
    displayed = quadrants(48, 32)
    Image.fromarray(displayed).save(tmp_path / "upright.jpg", quality=95)
    for orientation in STORED_TURNS:
        save_turned_jpeg(tmp_path / f"turned{orientation}.jpg", displayed, orientation)
    source = load_source(f"folder:{tmp_path}", image_size=8)
    assert (source.num_examples, source.skipped_files) == (4, 0)
    encoded = [decode_rgb(data) for data, _ in source.shuffled(seed=0, encoded=True)]
    for image in [image for image, _ in source.dataset] + encoded:
        assert image.shape == displayed.shape
        # JPEG blurs the quadrants' edges by a few levels; a wrong turn is off by about 100.
        assert np.abs(image.numpy().astype(int) - displayed).mean() < 8


def test_the_pixel_limit_is_configurable(tmp_path, caplog):
    _save(tmp_path / "wide.png", size=(40, 30))
    _save(tmp_path / "small.png", size=(4, 3))
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        source = load_source(f"folder:{tmp_path}", image_size=8, max_image_pixels=40 * 30 - 1)
    assert (source.num_examples, source.skipped_files) == (1, 1)
    assert "wide.png: 40x30 = 1,200 pixels, over the limit of 1,199" in _warnings_text(caplog)
    at_limit = load_source(f"folder:{tmp_path}", image_size=8, max_image_pixels=40 * 30)
    assert (at_limit.num_examples, at_limit.skipped_files) == (2, 0)


def test_data_config_defaults_are_the_documented_limits():
    assert DataConfig().max_file_mb == 64.0
    assert DataConfig().max_image_pixels == Image.MAX_IMAGE_PIXELS == 89_478_485


# Item 7: npz labels must be integer class indices in a sane range.

_X = np.zeros((2, 4, 4), np.uint8)


@pytest.mark.parametrize(
    ("arrays", "split", "message"),
    [
        ({"y_train": np.array([0, 2**32 + 1])}, "train", "holds labels 0..4294967297"),
        ({"y_train": np.array([0, 10**7])}, "train", "holds labels 0..10000000; expected"),
        ({"y_train": np.array([-1, 1])}, "train", "holds labels -1..1"),
        ({"y_train": np.array([0.0, np.inf])}, "train", "has dtype float64; expected integer"),
        ({"y_train": np.array([0.0, 1.0])}, "train", "has dtype float64; expected integer"),
        ({"y_train": np.array([True, False])}, "train", "has dtype bool; expected integer"),
        ({"y_train": np.array([[0, 1], [1, 0]])}, "train", "has shape (2, 2); expected (2,)"),
        ({"y_train": np.array([0, 1, 2])}, "train", "has shape (3,); expected (2,)"),
        ({"y_train": np.array([0, {}], dtype=object)}, "train", "cannot read array 'y_train'"),
        ({"y_train": np.array([0, 1]), "y_test": np.array([2**40])}, "train", "y_test in"),
        ({"x_test": np.array([_X[0], None], dtype=object)}, "test", "cannot read array 'x_test'"),
    ],
    ids=[
        "2**32+1",
        "1e7",
        "negative",
        "inf",
        "float",
        "bool",
        "2-d",
        "length",
        "object",
        "other-split",
        "object-images",
    ],
)
def test_bad_npz_arrays_are_one_line_usage_errors(tmp_path, arrays, split, message):
    path = tmp_path / "data.npz"
    np.savez(path, **{"x_train": _X, **arrays})
    with pytest.raises(UsageError) as caught:
        load_source(f"npz:{path}", split=split, image_size=4)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_good_npz_labels_of_any_integer_dtype_are_kept(tmp_path):
    path = tmp_path / "data.npz"
    labels = np.array([[MAX_CLASSES - 1], [0]], np.uint64)
    np.savez(path, x_train=_X, y_train=labels)
    source = load_source(f"npz:{path}", image_size=4)
    assert _labels(source) == [MAX_CLASSES - 1, 0]
    assert source.num_classes == MAX_CLASSES


def test_cli_refuses_an_object_label_array_with_exit_2_and_one_line(tmp_path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=_X, y_train=np.array([0, "a"], dtype=object))
    code = main(["train", "--set", f"data.source=npz:{path}", "--output", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(error) == 1 and error[0].startswith("byol-keras: error: data.source: cannot read")
