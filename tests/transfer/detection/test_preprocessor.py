"""Letterboxing: the aspect kept, the padding at the bottom and right."""

import numpy as np
import tensorflow as tf

from byol_keras.transfer.detection.preprocessor import letterbox


def test_letterbox_keeps_the_aspect_and_pads_bottom_and_right():
    image = np.full((1, 480, 640, 3), 255, np.uint8)
    pixels, scale = letterbox(tf.constant(image), (256, 320))
    pixels = np.asarray(pixels)
    # By hand: min(256 / 480, 320 / 640) = 0.5, so 240 x 320 of image and 16 rows of padding.
    assert pixels.shape == (1, 256, 320, 3) and np.asarray(scale).tolist() == [0.5, 0.5]
    assert np.all(pixels[0, :240] == 1.0) and np.all(pixels[0, 240:] == 0.0)
    tall = letterbox(tf.zeros([1, 100, 50, 3], tf.uint8), (64, 96))[1]
    np.testing.assert_allclose(tall, [0.64, 0.64], rtol=1e-6)  # 64 x 32 of 100 x 50
