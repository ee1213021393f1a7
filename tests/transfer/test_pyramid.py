"""feature_pyramid: the right strides and shapes per backbone, the backbone's own variables."""

import keras
import numpy as np
import pytest

from byol_keras import feature_pyramid
from byol_keras.errors import UsageError
from byol_keras.nn.backbones import build_backbone
from byol_keras.registration import load_model

# (name, image size, width, expected strides, channels per stride)
CASES = [
    ("tiny", 16, 4, (1, 2, 4, 8), (4, 8, 16, 16)),
    ("resnet18", 32, 4, (1, 2, 4, 8), (4, 8, 16, 32)),  # CIFAR stem: no down-sampling stem
    ("resnet18", 128, 4, (4, 8, 16, 32), (4, 8, 16, 32)),  # ImageNet stem from 96 px
    ("resnet34", 96, 4, (4, 8, 16, 32), (4, 8, 16, 32)),
    ("resnet50", 96, 4, (4, 8, 16, 32), (16, 32, 64, 128)),  # bottleneck: 4x the width
    ("MobileNetV3Small", 32, None, (4, 8, 16, 32), None),
    ("MobileNetV2", 64, None, (4, 8, 16, 32), None),
]


def _backbone(name, size, width):
    keras.utils.set_random_seed(0)
    if width is None:
        return build_backbone(name, size)
    return build_backbone(name, size, width=width)


@pytest.mark.parametrize("name, size, width, strides, channels", CASES)
def test_pyramid_levels_have_the_strides_and_channels_of_the_architecture(
    name, size, width, strides, channels
):
    backbone = _backbone(name, size, width)
    pyramid = feature_pyramid(backbone)
    images = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype("float32")
    maps = pyramid(images)
    assert sorted(maps) == sorted(f"stride_{s}" for s in strides)
    for index, stride in enumerate(strides):
        shape = tuple(maps[f"stride_{stride}"].shape)
        assert shape[:3] == (2, size // stride, size // stride)
        if channels is not None:
            assert shape[3] == channels[index]
    # The coarsest level is the map the backbone pools into its features.
    coarsest = np.asarray(maps[f"stride_{strides[-1]}"])
    np.testing.assert_allclose(coarsest.mean(axis=(1, 2)), backbone(images), atol=1e-5)


@pytest.mark.parametrize(
    "name, size, width", [("resnet18", 128, 4), ("MobileNetV3Small", 32, None)]
)
def test_a_pyramid_of_any_input_size_shares_the_backbone_variables(name, size, width):
    backbone = _backbone(name, size, width)
    pyramid = feature_pyramid(backbone, input_shape=(None, None, 3))
    backbone_variables = {id(v) for v in backbone.weights}
    assert pyramid.weights and all(id(v) in backbone_variables for v in pyramid.weights)
    # Another size than the backbone's, not a multiple of 32: ceil(side / stride).
    images = np.random.default_rng(1).uniform(0, 1, (1, size + 40, size + 8, 3)).astype("float32")
    before = pyramid(images)["stride_32"]
    if name.startswith("resnet"):  # "same" padding throughout: ceil(side / stride)
        assert tuple(before.shape[1:3]) == (-(-(size + 40) // 32), -(-(size + 8) // 32))
    # Changing a backbone weight changes the pyramid: shared, not copied.
    kernel = next(v for v in backbone.weights if "kernel" in v.path)
    kernel.assign(kernel * 2.0)
    after = np.asarray(pyramid(images)["stride_32"])
    assert np.abs(after - before).max() > 1e-3 * np.abs(before).max()


def test_pyramid_of_a_reloaded_run_backbone_uses_its_pretrained_weights(tmp_path):
    backbone = _backbone("resnet18", 32, 4)
    backbone.save(tmp_path / "backbone.keras")
    reloaded = load_model(tmp_path / "backbone.keras", compile=False)
    pyramid = feature_pyramid(reloaded, input_shape=(None, None, 3))
    assert {id(v) for v in pyramid.weights} <= {id(v) for v in reloaded.weights}
    images = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        feature_pyramid(backbone)(images)["stride_8"], pyramid(images)["stride_8"], atol=1e-5
    )


def test_levels_keeps_the_coarsest_and_a_subclassed_backbone_is_refused():
    pyramid = feature_pyramid(_backbone("tiny", 16, 4), levels=2)
    assert sorted(pyramid.output) == ["stride_4", "stride_8"]

    class Subclassed(keras.Model):
        def call(self, images):
            return keras.ops.mean(images, axis=(1, 2))

    with pytest.raises(UsageError, match="not a functional"):
        feature_pyramid(Subclassed(), input_shape=(16, 16, 3))


def test_a_stage_output_that_is_1x1_because_the_image_is_small_is_a_level():
    # Review defect 9: the docstring said such a map was left out; the code keeps it,
    # and leaves out the 1x1 squeeze-and-excitation vectors because they are branches.
    pyramid = feature_pyramid(_backbone("MobileNetV3Small", 32, None))
    assert tuple(pyramid.output["stride_32"].shape[1:3]) == (1, 1)
    assert sorted(pyramid.output) == ["stride_16", "stride_32", "stride_4", "stride_8"]
