"""segfolder sources: pairs, skips, EXIF, joined splits and bad mask values."""

import logging

import numpy as np
import pytest

from byol_keras.data import load_source
from byol_keras.data.segfolder import load_segmentation_split
from byol_keras.errors import UsageError
from tests.helpers.exif import quadrants, save_turned_jpeg
from tests.helpers.segfolder import VOID, make_segfolder, write_pair


def test_unusable_pairs_are_skipped_and_counted(tmp_path, caplog):
    root = make_segfolder(tmp_path, splits=("train",))
    write_pair(root, "train", "wrong_size", np.zeros((24, 32)), mask_size=(16, 12))
    (root / "train" / "images" / "no_mask.png").write_bytes(
        (root / "train" / "images" / "train0.png").read_bytes()
    )
    (root / "train" / "images" / "broken.png").write_bytes(b"not a png at all")
    (root / "train" / "masks" / "broken.png").write_bytes(
        (root / "train" / "masks" / "train0.png").read_bytes()
    )
    with caplog.at_level(logging.WARNING):
        split = load_segmentation_split(str(root), "train", (12, 16), 3, VOID)
    assert len(split) == 3 and split.skipped_files == 3
    assert "no mask" in caplog.text and "mask is 16x12, image 32x24" in caplog.text
    assert split.images.shape == (3, 12, 16, 3) and split.masks.shape == (3, 12, 16)
    assert split.full_masks[0].shape == (24, 32)
    # As a pretraining source: the same three images, unlabelled, the same three skipped.
    source = load_source(f"segfolder:{root}", split="train", image_size=8)
    assert (source.num_examples, source.skipped_files, source.has_labels) == (3, 3, False)
    labels = [int(label) for _, label in source.dataset]
    assert labels == [-1, -1, -1]


def test_a_photo_that_exif_turns_pairs_with_the_mask_drawn_on_it_as_displayed(tmp_path):
    displayed = quadrants(48, 32)
    mask = np.zeros((48, 32), int)
    mask[24:, :] = 1  # the bottom half, as shown
    write_pair(tmp_path, "train", "turned", mask)
    (tmp_path / "train" / "images" / "turned.png").unlink()
    save_turned_jpeg(tmp_path / "train" / "images" / "turned.jpg", displayed, orientation=6)
    split = load_segmentation_split(str(tmp_path), "train", (48, 32), 3, VOID)
    assert split.skipped_files == 0 and split.full_masks[0].shape == (48, 32)
    assert np.abs(split.images[0] * 255 - displayed).mean() < 8  # a wrong turn: about 100
    source = load_source(f"segfolder:{tmp_path}", split="train", image_size=8)
    ((image, _),) = list(source.dataset)
    assert np.abs(image.numpy().astype(int) - displayed).mean() < 8


def test_splits_join_with_plus_and_a_missing_split_is_named(tmp_path):
    root = make_segfolder(tmp_path)
    assert load_source(f"segfolder:{root}", split="train+val", image_size=8).num_examples == 6
    with pytest.raises(UsageError, match="no 'extra/images'.*splits found: test, train, val"):
        load_source(f"segfolder:{root}", split="extra", image_size=8)


def test_a_mask_value_neither_class_nor_void_names_the_file_and_value(tmp_path):
    root = make_segfolder(tmp_path, splits=("train",))
    mask = np.zeros((24, 32))
    mask[3, 4] = 7
    write_pair(root, "train", "bad", mask)
    with pytest.raises(
        UsageError, match=r"bad\.png' holds the value 7.*0\.\.2.*ignore_index \(11\)"
    ):
        load_segmentation_split(str(root), "train", (12, 16), 3, VOID)
