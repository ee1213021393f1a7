"""segfolder sources and the joint image/mask augmentation."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from byol_keras.data import load_source
from byol_keras.data.segfolder import load_segmentation_split
from byol_keras.errors import UsageError
from byol_keras.transfer.segmentation.augment import PADDING, JointAugment
from tests.helpers.exif import quadrants, save_turned_jpeg
from tests.helpers.segfolder import VOID, make_segfolder, write_pair

# The eight corners of the RGB cube; a bilinear blend of two of them is none of them.
CORNERS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], np.float32)


def _block_image(rng, height=48, width=64, block=8):
    """An image of constant blocks of cube-corner colours; its mask is a function of its pixels."""
    classes = rng.integers(0, 8, (height // block, width // block))
    classes = np.kron(classes, np.ones((block, block), np.int64))
    return CORNERS[classes], classes


def _misaligned_pixels(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(pixels whose colour is a pure corner but whose mask names another, pure pixels checked)."""
    distance = np.abs(image[:, :, None, :] - CORNERS[None, None]).max(axis=-1)
    pure = distance.min(axis=-1) < 1e-4
    checked = pure & (mask != VOID) & (mask != PADDING)
    wrong = checked & (distance.argmin(axis=-1) != mask)
    return int(wrong.sum()), int(checked.sum())


def test_image_and_mask_stay_aligned_under_scale_crop_and_flip():
    rng = np.random.default_rng(0)
    augment = JointAugment(crop_size=(40, 56), scale_range=(0.5, 1.6))
    flipped = padded = 0
    for step in range(24):
        image, classes = _block_image(rng)
        out_image, out_mask = augment(image, classes, seed=tf.constant([step, 7]))
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        assert out_image.shape == (40, 56, 3) and out_mask.shape == (40, 56)
        # Nearest neighbour: no value the mask did not hold, except the padding.
        assert set(np.unique(out_mask)) <= set(np.unique(classes)) | {PADDING}
        wrong, checked = _misaligned_pixels(out_image, out_mask)
        assert checked > 0.5 * ((out_mask != VOID) & (out_mask != PADDING)).sum() and wrong == 0
        # The same check finds a mask flipped without its image.
        if len(np.unique(out_mask[:, :28])) > 2:
            assert _misaligned_pixels(out_image, out_mask[:, ::-1])[0] > 0
        padding = out_mask == PADDING
        padded += bool(padding.any())
        np.testing.assert_array_equal(out_image[padding], 0.0)  # padding, image and mask alike
        reference = np.asarray(
            augment.__class__((40, 56), (0.5, 1.6), flip=False)(
                image, classes, seed=tf.constant([step, 7])
            )[1]
        )
        flipped += not np.array_equal(reference, out_mask)
    assert flipped > 0 and padded > 0  # both flips, and scales below the crop, were drawn


def test_colour_jitter_changes_the_image_and_never_the_mask():
    image, classes = _block_image(np.random.default_rng(1))
    seed = tf.constant([5, 9])
    plain = JointAugment((40, 56), (0.8, 1.2))(image, classes, seed)
    jittered = JointAugment((40, 56), (0.8, 1.2), jitter=0.4)(image, classes, seed)
    np.testing.assert_array_equal(plain[1], jittered[1])
    assert np.abs(plain[0].numpy() - jittered[0].numpy()).max() > 0.05


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


def test_crop_padding_is_never_trained_even_without_a_void_index():
    # Review defect 2: with ignore_index None the padding was trained as class 0.
    from byol_keras.transfer.segmentation.model import _training_batches

    images = np.full((2, 8, 8, 3), 0.5, np.float32)
    masks = np.zeros((2, 8, 8), np.uint8)  # every real pixel is class 0
    # Scale 0.5 of an 8x8 pair inside a 8x8 crop: 48 of the 64 pixels are padding.
    augment = JointAugment(crop_size=(8, 8), scale_range=(0.5, 0.5), flip=False)
    batches = _training_batches(images, masks, augment, 2, ignore_index=None, seed=0)
    _, classes, weights = next(iter(batches))
    assert float(tf.reduce_sum(weights)) == 2 * 16  # the 4x4 image pixels of each example
    assert set(np.unique(classes.numpy())) == {0}
