"""build_detector's heads start where the focal-loss paper starts them, whatever the backbone."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.nn.backbones import all_layers, build_backbone
from byol_keras.transfer.detection.model import build_detector

SIZE = (128, 128)
ALPHA, GAMMA, PRIOR = 0.25, 2.0, 0.01  # KerasCV's "focal" loss; the paper's prior


def _fresh_detector(feature_scale: float, head_init: str, norm: str = "none"):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("resnet18", SIZE[0], stem="imagenet", width=16)
    # Pretraining leaves larger features than random init does (BN scales above 1).
    for layer in all_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(layer.gamma * feature_scale)
    sizes = (8.0, 16.0, 32.0, 64.0, 128.0)
    return build_detector(backbone, 3, SIZE, sizes, head_width=16, head_init=head_init, norm=norm)


def _focal_loss_at_the_prior(positive: int, negative: int, classes: int) -> float:
    """KerasCV's classification loss when every logit is the prior's, by hand.

    Per anchor and class, FocalLoss is alpha_t (1 - p_t)^gamma (-log p_t), alpha_t = alpha
    for the true class and 1 - alpha otherwise, p_t = p or 1 - p alike; it sums over the
    classes ("sum" reduction) and RetinaNet weighs every non-ignored anchor by 1 / (number
    of positive anchors). A positive anchor has one true class and `classes - 1` false;
    a background anchor has `classes` false ones; ignored anchors count nothing.
    """
    true = ALPHA * (1 - PRIOR) ** GAMMA * -math.log(PRIOR)
    false = (1 - ALPHA) * PRIOR**GAMMA * -math.log(1 - PRIOR)
    return (positive * true + (positive * (classes - 1) + negative * classes) * false) / positive


def _initial_classification_loss(detector):
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (4, *SIZE, 3)).astype("float32"))
    targets = {
        "boxes": tf.constant([[[10, 10, 40, 50], [60, 60, 120, 100]]] * 4, tf.float32),
        "classes": tf.constant([[0, 2]] * 4, tf.float32),
    }
    # A box loss of 0 leaves the focal loss alone in the total.
    detector.compile(
        classification_loss="focal",
        box_loss=lambda true, predicted: tf.zeros(tf.shape(predicted)[:-1]),
        optimizer="sgd",
    )
    outputs = detector(images, training=True)  # as fit's first step sees it
    loss = float(detector.compute_loss(images, targets, outputs, None))
    _, anchor_classes = detector.label_encoder(images, targets)
    anchor_classes = np.asarray(anchor_classes)
    positive, negative = int((anchor_classes >= 0).sum()), int((anchor_classes == -1).sum())
    assert positive > 0 and negative > 100 * positive  # the imbalance the prior is for
    return loss, _focal_loss_at_the_prior(positive, negative, classes=3)


@pytest.mark.parametrize("feature_scale", [1.0, 4.0])
def test_the_first_focal_loss_is_the_papers_at_the_prior_for_small_and_large_features(
    feature_scale,
):
    loss, expected = _initial_classification_loss(_fresh_detector(feature_scale, "normal"))
    assert loss == pytest.approx(expected, rel=0.05)


def test_orthogonal_heads_start_away_from_the_prior_when_features_are_large():
    # The old initialisation, kept as detect.head_init=orthogonal: logits scale with features.
    loss, expected = _initial_classification_loss(_fresh_detector(4.0, "orthogonal"))
    assert abs(loss / expected - 1) > 0.05


def test_group_norm_heads_start_at_the_same_loss_whatever_the_feature_scale():
    small, _ = _initial_classification_loss(_fresh_detector(1.0, "orthogonal", "group"))
    large, _ = _initial_classification_loss(_fresh_detector(4.0, "orthogonal", "group"))
    assert large == pytest.approx(small, rel=1e-3)


def test_head_kernels_follow_head_init_and_the_biases_the_prior():
    detector = _fresh_detector(1.0, "normal")
    for head in (detector.classification_head, detector.box_head):
        for layer in [*head.conv_layers, head.prediction_layer]:
            kernel = np.asarray(layer.kernel)
            assert abs(kernel.mean()) < 1e-3 and kernel.std() == pytest.approx(0.01, rel=0.1)
        for layer in head.conv_layers:
            np.testing.assert_array_equal(np.asarray(layer.bias), 0.0)
    prior = np.asarray(detector.classification_head.prediction_layer.bias)
    np.testing.assert_allclose(prior, -math.log((1 - PRIOR) / PRIOR), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(detector.box_head.prediction_layer.bias), 0.0)
