"""Image sources: real files written with Pillow, checked against hand-computed pixels."""

import logging
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

import byol_keras.data as data_package
from byol_keras.augment import image_batches
from byol_keras.data import ImageSource, load_source
from byol_keras.data.source import array_to_uint8
from byol_keras.errors import UsageError


def _save(path, image, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _solid(rgb, size=(5, 7)):
    return Image.new("RGB", size, rgb)


def _examples(source: ImageSource):
    """All (image, label) pairs of a source, in order, as numpy."""
    pairs = [(image, int(label)) for image, label in source.dataset.as_numpy_iterator()]
    for image, _ in pairs:
        assert image.dtype == np.uint8
    return pairs


def test_bad_files_are_skipped_counted_and_logged(tmp_path, caplog):
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    for i, rgb in enumerate(colours):
        _save(tmp_path / f"good{i}.png", _solid(rgb))
    jpeg = _save(tmp_path / "truncated.jpg", Image.fromarray(np.full((64, 64, 3), 90, "uint8")))
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "not_an_image.png").write_text("this is text, not a PNG\n")
    (tmp_path / "notes.txt").write_text("not an image extension: ignored, not counted")

    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        source = load_source(f"folder:{tmp_path}", image_size=8)

    assert source.skipped_files == 3
    assert source.num_examples == 3
    assert "3 skipped" in source.description
    assert not source.has_labels and source.num_classes is None and source.class_names is None
    examples = _examples(source)
    assert [label for _, label in examples] == [-1, -1, -1]
    assert source.image_size is None  # 5x7 files keep their own size
    for (image, _), rgb in zip(examples, colours, strict=True):
        np.testing.assert_array_equal(image, np.broadcast_to(rgb, (7, 5, 3)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipped 3 of 6" in message for message in warnings), warnings
    for name in ("truncated.jpg", "empty.jpg", "not_an_image.png"):
        assert any(name in message for message in warnings), name


def test_a_file_that_vanishes_after_loading_does_not_end_the_run(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", _solid((i, i, i)))
    source = load_source(f"folder:{tmp_path}", image_size=4)
    (tmp_path / "1.png").unlink()
    assert [int(image.max()) for image, _ in _examples(source)] == [0, 2]


def test_unusual_image_kinds_load_as_uint8_rgb(tmp_path, caplog):
    cases = {
        "a_cmyk.jpg": (Image.new("CMYK", (6, 6), (0, 255, 255, 0)), (255, 0, 0), 3),
        "b_16bit_max.png": (Image.fromarray(np.full((6, 6), 65535, np.uint16)), (255,) * 3, 0),
        "c_16bit_mid.png": (Image.fromarray(np.full((6, 6), 100 * 257, np.uint16)), (100,) * 3, 0),
        "d_rgba.png": (Image.new("RGBA", (6, 6), (10, 20, 30, 40)), (10, 20, 30), 0),
        "e_one_pixel.png": (_solid((200, 100, 50), (1, 1)), (200, 100, 50), 0),
        "f_grey.png": (Image.new("L", (9, 4), 77), (77, 77, 77), 0),
        "g_grey_alpha.png": (Image.new("LA", (6, 6), (33, 200)), (33, 33, 33), 0),
        "h_one_bit.bmp": (Image.new("1", (6, 6), 1), (255, 255, 255), 0),  # Pillow fallback
        "i_rgba.webp": (Image.new("RGBA", (6, 6), (10, 200, 30, 5)), (10, 200, 30), 0),
        "j_palette.gif": (_solid((10, 200, 30)), (10, 200, 30), 0),
        "k_upper_case.PNG": (_solid((1, 2, 3)), (1, 2, 3), 0),
    }
    for name, (image, _, _) in cases.items():
        _save(tmp_path / name, image, **({"lossless": True} if name.endswith(".webp") else {}))
    assert Image.open(tmp_path / "b_16bit_max.png").mode.startswith("I")

    with caplog.at_level(logging.INFO, logger="byol_keras"):
        source = load_source(f"folder:{tmp_path}", image_size=8)

    assert source.skipped_files == 0
    assert source.num_examples == len(cases)
    assert any("1 image(s) decoded with Pillow" in r.getMessage() for r in caplog.records)
    for (image, _), (name, (original, rgb, tolerance)) in zip(
        _examples(source), cases.items(), strict=True
    ):
        assert image.shape == (original.height, original.width, 3), name
        error = np.abs(image.astype(int) - np.array(rgb)).max()
        assert error <= tolerance, (name, image[0, 0], rgb)
    # Pillow's own reading of the CMYK file agrees with ours.
    pillow_rgb = np.asarray(Image.open(tmp_path / "a_cmyk.jpg").convert("RGB"))[0, 0]
    assert np.abs(_examples(source)[0][0][0, 0].astype(int) - pillow_rgb).max() <= 3


def test_small_squares_of_one_size_are_resized_and_larger_images_keep_their_own(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    _save(tmp_path / "noise.png", Image.fromarray(pixels))
    _save(tmp_path / "grey.png", Image.new("RGB", (12, 12), (9, 9, 9)))
    exact = load_source(f"folder:{tmp_path}", image_size=12)
    assert exact.image_size == 12
    ((grey, _), (image, _)) = _examples(exact)
    np.testing.assert_array_equal(image, pixels)
    enlarged = load_source(f"folder:{tmp_path}", image_size=24)
    assert enlarged.image_size == 24  # resizing up to the views loses nothing
    assert _examples(enlarged)[1][0].shape == (24, 24, 3)
    # Squashing to 6 px would lose what the crops need: the images keep their size.
    views_smaller = load_source(f"folder:{tmp_path}", image_size=6)
    assert views_smaller.image_size is None and views_smaller.encoded is not None
    np.testing.assert_array_equal(_examples(views_smaller)[1][0], pixels)
    _save(tmp_path / "wide.png", Image.new("RGB", (12, 6), (9, 9, 9)))
    assert load_source(f"folder:{tmp_path}", image_size=12).image_size is None


def test_labels_come_from_sorted_first_level_folder_names(tmp_path):
    files = {
        "dog/a.png": (1, 1, 1),
        "cat/deeper/b.png": (2, 2, 2),
        "cat/c.jpeg": (3, 3, 3),
        "loose.png": (4, 4, 4),
        ".hidden/d.png": (5, 5, 5),
    }
    for name, rgb in files.items():
        _save(tmp_path / name, _solid(rgb, (8, 8)), **({"quality": 100} if "jpeg" in name else {}))

    source = load_source(f"folder:{tmp_path}", image_size=8)

    assert source.class_names == ["cat", "dog"]
    assert source.num_classes == 2 and source.has_labels
    got = [(int(np.round(image.mean())), label) for image, label in _examples(source)]
    # Sorted relative paths: cat/c.jpeg, cat/deeper/b.png, dog/a.png, loose.png.
    assert got == [(3, 0), (2, 0), (1, 1), (4, -1)]


def test_a_split_subfolder_is_used_when_present(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for i in range(count):
            _save(tmp_path / split / "only_class" / f"{i}.png", _solid((i, i, i)))

    assert load_source(f"folder:{tmp_path}", split="test").num_examples == 2
    assert load_source(f"folder:{tmp_path}", split="train").num_examples == 3
    with pytest.raises(UsageError, match="no 'val' sub-folder"):
        load_source(f"folder:{tmp_path}", split="val")


def test_user_mistakes_raise_one_line_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zero.jpg").write_bytes(b"")
    np.savez(tmp_path / "train_only.npz", x_train=np.zeros((2, 4, 4), "uint8"))
    cases = [
        (f"folder:{tmp_path / 'empty'}", "train", "contains no image files"),
        (f"folder:{tmp_path / 'missing'}", "train", "does not exist"),
        (f"folder:{tmp_path / 'bad'}", "train", "no readable images"),
        ("ftp:somewhere", "train", "unknown source 'ftp:somewhere'"),
        ("folder:", "train", "names no folder"),
        (f"npz:{tmp_path / 'missing.npz'}", "train", "does not exist"),
        (f"npz:{tmp_path / 'train_only.npz'}", "test", "no array 'x_test'"),
        (f"npz:{tmp_path / 'train_only.npz'}", "validation", "not 'validation'"),
        ("digits", "validation", "not 'validation'"),
    ]
    for spec, split, message in cases:
        with pytest.raises(UsageError, match=message) as caught:
            load_source(spec, split=split)
        assert "\n" not in str(caught.value), spec


def test_digits_split_is_stratified_80_20_and_covers_every_image():
    digits = load_digits()
    totals = np.bincount(digits.target)
    train = load_source("digits", split="train", image_size=8)
    test = load_source("digits", split="test", image_size=8)
    assert (train.num_examples, test.num_examples) == (1437, 360)

    train_examples, test_examples = _examples(train), _examples(test)
    train_counts = np.bincount([label for _, label in train_examples], minlength=10)
    test_counts = np.bincount([label for _, label in test_examples], minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, totals)
    assert np.all(np.abs(test_counts - 0.2 * totals) < 1), test_counts

    # Together the splits are exactly the original images, scaled 0..16 -> 0..255.
    expected = Counter(
        (np.round(image * 255 / 16).astype("uint8").tobytes(), int(label))
        for image, label in zip(digits.images, digits.target, strict=True)
    )
    got = Counter(
        (image[:, :, 0].tobytes(), label) for image, label in train_examples + test_examples
    )
    assert got == expected
    assert all(np.array_equal(image[..., 0], image[..., 2]) for image, _ in test_examples[:20])
    # Deterministic: loading again gives the same order.
    again = [label for _, label in _examples(load_source("digits", split="test", image_size=8))]
    assert again == [label for _, label in test_examples]


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (4, 6, 6), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 6, 6, 3), dtype=np.uint8)
    path = tmp_path / "small.npz"
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 0, 1]), x_test=x_test,
             y_test=np.array([[4], [0], [2]]))  # fmt: skip

    train = load_source(f"npz:{path}", split="train", image_size=6)
    test = load_source(f"npz:{path}", split="test", image_size=6)

    # Five classes in both, because y_test reaches 4.
    assert (train.num_classes, test.num_classes) == (5, 5)
    assert train.class_names == ["0", "1", "2", "3", "4"]
    assert (train.num_examples, test.num_examples) == (4, 3)
    for (image, label), pixels, y in zip(_examples(train), x_train, [0, 1, 0, 1], strict=True):
        np.testing.assert_array_equal(image, np.repeat(pixels[..., None], 3, axis=-1))
        assert label == y
    for (image, label), pixels, y in zip(_examples(test), x_test, [4, 0, 2], strict=True):
        np.testing.assert_array_equal(image, pixels)
        assert label == y
    assert _examples(load_source(f"npz:{path}", image_size=12))[0][0].shape == (12, 12, 3)

    np.savez(tmp_path / "unlabelled.npz", x_train=x_train.astype("float32") / 255.0)
    unlabelled = load_source(f"npz:{tmp_path / 'unlabelled.npz'}", image_size=6)
    assert unlabelled.num_classes is None and not unlabelled.has_labels
    examples = _examples(unlabelled)
    assert [label for _, label in examples] == [-1] * 4
    np.testing.assert_array_equal(examples[2][0][..., 1], x_train[2])


def test_array_to_uint8_scales_known_ranges_and_refuses_others():
    np.testing.assert_array_equal(array_to_uint8(np.array([0.0, 0.5, 1.0]), "x"), [0, 128, 255])
    np.testing.assert_array_equal(array_to_uint8(np.array([0, 7, 255], "int64"), "x"), [0, 7, 255])
    np.testing.assert_array_equal(array_to_uint8(np.array([0, 65535], "uint16"), "x"), [0, 255])
    with pytest.raises(UsageError, match="pixel values -1"):
        array_to_uint8(np.array([-1.0, 1.0]), "x_train")


def test_tfds_source_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        source = load_source("tfds:mnist", split="train", image_size=16, data_dir=str(tmp_path))
        examples = _examples(source)
    assert source.num_examples == len(examples) == 5
    assert source.num_classes == 10 and source.class_names == [str(i) for i in range(10)]
    for image, label in examples:
        assert image.shape == (16, 16, 3)
        # MNIST is grey: the three channels must be copies.
        np.testing.assert_array_equal(image[..., 0], image[..., 2])
        assert 0 <= label < 10

    with pytest.raises(UsageError, match="no dataset 'no_such_dataset_xyz'"):
        load_source("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))


def test_tfds_images_of_varying_shape_keep_their_size_and_their_encoded_bytes(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        source = load_source("tfds:imagenette", image_size=16, data_dir=str(tmp_path))
        assert source.image_size is None
        examples = _examples(source)
        encoded = list(source.shuffled(0, encoded=True).as_numpy_iterator())
    assert len({image.shape for image, _ in examples}) > 1  # mock images of random shapes
    decoded = sorted(tf.io.decode_image(data).numpy().tobytes() for data, _ in encoded)
    assert decoded == sorted(image.tobytes() for image, _ in examples)


def test_tfds_without_data_or_network_names_dataset_and_data_dir(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(UsageError, match="'mnist' is not prepared") as caught:
        load_source("tfds:mnist", data_dir=str(tmp_path / "tfds"))
    assert str(tmp_path / "tfds") in str(caught.value)
    assert "network is unreachable" in str(caught.value)


@pytest.mark.data
def test_mnist_npz_has_the_readme_class_counts(mnist_npz):
    train = load_source(f"npz:{mnist_npz}", split="train", image_size=28)
    test = load_source(f"npz:{mnist_npz}", split="test", image_size=28)
    assert (train.num_examples, test.num_examples) == (60000, 10000)
    assert train.num_classes == 10
    labels = [y.numpy() for _, y in test.dataset.batch(10000)][0]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    labels = np.concatenate([y.numpy() for _, y in train.dataset.batch(20000)])
    expected = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(labels).tolist() == expected


@pytest.mark.data
def test_cifar10_jpeg_test_folder(cifar10_folder):
    source = load_source(f"folder:{cifar10_folder}", split="test", image_size=32)
    assert source.num_examples == 10000 and source.skipped_files == 0
    assert source.class_names == [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    images, labels = next(iter(source.dataset.batch(10000)))
    assert images.shape == (10000, 32, 32, 3)
    assert np.bincount(labels.numpy()).tolist() == [1000] * 10
    first = np.asarray(Image.open(cifar10_folder / "test" / "airplane" / "0000.jpg").convert("RGB"))
    # Same JPEG, two decoders (TF's fast integer IDCT, Pillow's accurate one): close.
    difference = np.abs(images[0].numpy().astype(int) - first)
    assert difference.mean() < 1.0 and difference.max() <= 6


def _class_folders(root, classes, per_class, split=None, all_classes=None):
    """Solid grey PNGs under `root[/split]/<class>/`, of level 40 * (1 + index in `all_classes`)."""
    base = root / split if split else root
    all_classes = all_classes or classes
    for name in classes:
        level = 40 * (all_classes.index(name) + 1)
        for i in range(per_class):
            _save(base / name / f"{i:03d}.png", _solid((level,) * 3, (4, 4)))


def test_folder_splits_share_one_class_index(tmp_path):
    _class_folders(tmp_path, ["a", "b", "c"], 2, "train")
    _class_folders(tmp_path, ["a", "c"], 2, "test", all_classes=["a", "b", "c"])
    train = load_source(f"folder:{tmp_path}", split="train", image_size=4)
    test = load_source(f"folder:{tmp_path}", split="test", image_size=4)
    assert train.class_names == test.class_names == ["a", "b", "c"]
    # Class c is grey level 120 in both splits and must get index 2 in both.
    for source in (train, test):
        for image, label in _examples(source):
            assert image[0, 0, 0] == 40 * (label + 1)


def test_class_sorted_folders_are_read_in_a_mixed_order(tmp_path):
    classes = [f"class{i}" for i in range(5)]
    _class_folders(tmp_path, classes, 40, None)
    source = load_source(f"folder:{tmp_path}", image_size=4)
    # The training pipeline, with a buffer far smaller than one class.
    batches = image_batches(source, 20, shuffle_buffer=10, seed=0, cache=True)
    first = np.concatenate([batch.numpy() for batch in batches.take(5)])
    labels = np.round(first[:, 0, 0, 0] * 255 / 40).astype(int) - 1
    counts = Counter(labels.tolist())
    # 100 of 200 images, 40 per class: a uniform draw gives 20 +- 2.8 of each.
    assert sorted(counts) == [0, 1, 2, 3, 4]
    assert all(10 <= count <= 30 for count in counts.values()), counts

    order = [int(label) for _, label in source.shuffled(seed=0).repeat(2).as_numpy_iterator()]
    assert sorted(order[:200]) == sorted(order[200:]) == sorted(labels_of(source))
    assert order[:200] != order[200:]  # a new order every pass
    again = [int(label) for _, label in source.shuffled(seed=0).as_numpy_iterator()]
    assert again == order[:200]  # and the same orders for the same seed


def labels_of(source):
    return [label for _, label in _examples(source)]


def test_example_ids_find_shared_examples_across_splits(tmp_path):
    digits_all, digits_test = (
        load_source("digits", split=s, image_size=8) for s in ("all", "test")
    )
    assert digits_all.shared_examples(digits_test) == digits_test.num_examples
    digits_train = load_source("digits", split="train", image_size=8)
    assert digits_train.shared_examples(digits_test) == 0

    _class_folders(tmp_path / "flat", ["a", "b"], 3)
    flat_train, flat_test = (load_source(f"folder:{tmp_path / 'flat'}", split=s, image_size=4)
                             for s in ("train", "test"))  # fmt: skip
    assert flat_train.shared_examples(flat_test) == 6
    # The same files through a symbolic link are the same examples.
    (tmp_path / "link").symlink_to(tmp_path / "flat")
    linked = load_source(f"folder:{tmp_path / 'link'}", image_size=4)
    assert flat_train.shared_examples(linked) == 6


class ByolTinyTfds(tfds.core.GeneratorBasedBuilder):
    """A real, locally prepared tfds data set: 20 train and 10 test 8x8 images, 2 classes."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=2),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20), "test": self._generate_examples(10)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((8, 8, 3), i, np.uint8), "label": i % 2}


def test_tfds_slices_resolve_to_the_examples_they_share(tmp_path):
    builder = ByolTinyTfds(data_dir=str(tmp_path))
    builder.download_and_prepare()
    name = builder.name

    def source(split):
        return load_source(f"tfds:{name}", split=split, image_size=8, data_dir=str(tmp_path))

    train, first_tenth, test = source("train"), source("train[:10%]"), source("test")
    assert first_tenth.num_examples == 2
    assert train.shared_examples(first_tenth) == 2
    assert train.shared_examples(test) == 0
    assert source("train[50%:]").shared_examples(first_tenth) == 0


def test_an_unknown_source_names_every_format_of_the_table():
    with pytest.raises(UsageError) as caught:
        load_source("ftp:somewhere")
    assert str(caught.value) == (
        "data.source: unknown source 'ftp:somewhere' (expected digits, tfds:<name>, "
        "folder:<path>, npz:<path>, segfolder:<path>, voc:<path> or coco:<path>)"
    )


def test_a_new_format_is_one_row_of_the_table(monkeypatch):
    # A reader that records what load_source hands it, registered by one row.
    calls = []
    digits = load_source("digits", split="test", image_size=8)

    def load(path, split, options):
        calls.append((path, split, options.image_size, options.limits.max_file_mb))
        return digits

    monkeypatch.setitem(data_package.FORMATS, "mine", data_package.SourceFormat("path", load))
    assert load_source("mine:some/where", split="val", image_size=8, max_file_mb=3.0) is digits
    assert calls == [("some/where", "val", 8, 3.0)]
    with pytest.raises(UsageError, match=r"or mine:<path>\)"):
        load_source("ftp:somewhere")
