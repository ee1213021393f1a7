"""The joint image/mask augmentation: alignment under scale, crop and flip; jitter on the image
only; crop padding never trained."""

import numpy as np
import tensorflow as tf

from byol_keras.transfer.segmentation.augment import PADDING, JointAugment
from byol_keras.transfer.segmentation.training import _training_batches
from tests.helpers.segfolder import VOID

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


def test_crop_padding_is_never_trained_even_without_a_void_index():
    # Review defect 2: with ignore_index None the padding was trained as class 0.
    images = np.full((2, 8, 8, 3), 0.5, np.float32)
    masks = np.zeros((2, 8, 8), np.uint8)  # every real pixel is class 0
    # Scale 0.5 of an 8x8 pair inside a 8x8 crop: 48 of the 64 pixels are padding.
    augment = JointAugment(crop_size=(8, 8), scale_range=(0.5, 0.5), flip=False)
    batches = _training_batches(images, masks, augment, 2, ignore_index=None, seed=0)
    _, classes, weights = next(iter(batches))
    assert float(tf.reduce_sum(weights)) == 2 * 16  # the 4x4 image pixels of each example
    assert set(np.unique(classes.numpy())) == {0}
