import colorsys
import json
from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.augment import BYOLAugmenter, image_batches, make_augmenter, pair_dataset
from byol_keras.augment.augmenter import _shift_hue
from byol_keras.augment.layers import RandomGaussianBlur, default_blur_kernel_size
from byol_keras.augment.views import view_params
from byol_keras.catalog import PRESETS, ViewParams
from byol_keras.errors import UsageError

SEED = tf.constant([7, 11], tf.int64)
# Everything off: crop = whole image, no flip, jitter, grayscale, blur or solarisation.
PLAIN = ViewParams(
    crop_area=(1.0, 1.0),
    crop_aspect=(1.0, 1.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)


def plain(**changes) -> ViewParams:
    return ViewParams(**{**PLAIN.__dict__, **changes})


def images(batch=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(size=(batch, size, size, 3)), tf.float32)


def uint8_examples(count=64, size=32, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices((pixels, np.arange(count, dtype=np.int32)))


def hsv(x):
    return tf.image.rgb_to_hsv(x).numpy()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", [24, 40])
def test_views_have_shape_dtype_and_range(preset, size):
    view1, view2 = make_augmenter(preset, image_size=32, seed=0)(images(6, size))
    for view in (view1, view2):
        assert view.shape == (6, 32, 32, 3) and view.dtype == tf.float32
        assert float(tf.reduce_min(view)) >= 0.0 and float(tf.reduce_max(view)) <= 1.0


def test_uint8_input_is_scaled_to_unit_range():
    augmenter = BYOLAugmenter(32, PLAIN, PLAIN)
    pixels = tf.constant(np.arange(32 * 32 * 3).reshape(1, 32, 32, 3) % 256, tf.uint8)
    view, _ = augmenter(pixels, seed=SEED)
    np.testing.assert_array_equal(view.numpy(), pixels.numpy() / np.float32(255))


def test_everything_off_gives_the_input_or_its_bilinear_resize():
    x = images(4, 32)
    view1, view2 = BYOLAugmenter(32, PLAIN, PLAIN)(x, seed=SEED)
    np.testing.assert_array_equal(view1.numpy(), x.numpy())
    np.testing.assert_array_equal(view2.numpy(), x.numpy())
    for size in (20, 48):
        x = images(4, size)
        view, _ = BYOLAugmenter(32, PLAIN, PLAIN)(x, seed=SEED)
        np.testing.assert_allclose(view.numpy(), tf.image.resize(x, [32, 32]).numpy(), atol=1e-5)


def test_training_false_gives_plain_resize():
    x = images(2, 40)
    view1, view2 = make_augmenter("byol", 32)(x, training=False)
    expected = tf.image.resize(x, [32, 32]).numpy()
    np.testing.assert_allclose(view1.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(view2.numpy(), expected, atol=1e-6)


def test_flip_prob_one_mirrors():
    x = images(4, 32)
    view, _ = BYOLAugmenter(32, plain(flip_prob=1.0), PLAIN)(x, seed=SEED)
    np.testing.assert_array_equal(view.numpy(), x.numpy()[:, :, ::-1])


def test_flip_is_per_sample():
    x = images(200, 16)
    view, _ = BYOLAugmenter(16, plain(flip_prob=0.5), PLAIN)(x, seed=SEED)
    flipped = np.all(view.numpy() == x.numpy()[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(view.numpy() == x.numpy(), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)
    assert 0.35 < flipped.mean() < 0.65


def test_crop_is_per_sample_and_zooms_in():
    # A constant image stays constant under any crop; a gradient shows the box.
    ramp = tf.tile(tf.linspace(0.0, 1.0, 32)[None, None, :, None], [64, 32, 1, 3])
    view, _ = BYOLAugmenter(32, plain(crop_area=(0.08, 0.5)), PLAIN)(ramp, seed=SEED)
    spans = np.ptp(view.numpy()[:, 0, :, 0], axis=1)
    assert np.all(spans < 0.75)  # at most half the area: narrower than the image
    assert len(np.unique(np.round(spans, 4))) > 50  # every sample has its own box


def test_solarize_prob_one_matches_hand_computed_solarisation():
    augmenter_off = make_augmenter("byol", 32, solarize_prob=(0.0, 0.0))
    augmenter_on = make_augmenter("byol", 32, solarize_prob=(0.0, 1.0))
    x = images(8, 32)
    first_off, second_off = augmenter_off(x, seed=SEED)
    first_on, second_on = augmenter_on(x, seed=SEED)
    np.testing.assert_array_equal(first_on.numpy(), first_off.numpy())
    base = second_off.numpy()
    expected = np.where(base < 0.5, base, 1.0 - base)
    np.testing.assert_allclose(second_on.numpy(), expected, atol=1e-6)
    assert np.abs(expected - base).max() > 0.1  # the test would notice a no-op


def test_grayscale_prob_one_gives_equal_channels():
    view1, view2 = make_augmenter("byol", 32, grayscale_prob=1.0)(images(8), seed=SEED)
    for view in (view1.numpy(), view2.numpy()):
        np.testing.assert_array_equal(view[..., 0], view[..., 1])
        np.testing.assert_array_equal(view[..., 1], view[..., 2])


def test_grayscale_is_per_sample():
    view, _ = BYOLAugmenter(16, plain(grayscale_prob=0.5), PLAIN)(images(200, 16), seed=SEED)
    grey = np.all(np.ptp(view.numpy(), axis=-1) < 1e-6, axis=(1, 2))
    assert 0.35 < grey.mean() < 0.65


def test_views_differ_from_each_other_and_between_calls():
    augmenter = make_augmenter("byol", 32, seed=1)
    x = images(4)
    view1, view2 = augmenter(x)
    again, _ = augmenter(x)
    assert np.abs(view1.numpy() - view2.numpy()).mean() > 0.05
    assert np.abs(view1.numpy() - again.numpy()).mean() > 0.05


def test_brightness_adds_a_per_sample_delta():
    # Official BYOL semantics: x + U[-b, b] (torchvision would multiply by U[1-b, 1+b]).
    grey = tf.fill([300, 8, 8, 3], 0.5)
    params = plain(
        jitter_prob=1.0, color="byol", brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0
    )
    view, _ = BYOLAugmenter(8, params, PLAIN)(grey, seed=SEED)
    delta = view.numpy()[:, 0, 0, 0] - 0.5
    assert delta.min() >= -0.4 - 1e-6 and delta.max() <= 0.4 + 1e-6
    assert delta.min() < -0.38 and delta.max() > 0.38  # the whole range is used
    assert len(np.unique(np.round(delta, 5))) > 250


def test_contrast_scales_about_each_channel_mean():
    x = images(300, 8)
    params = plain(
        jitter_prob=1.0, color="byol", brightness=0.0, contrast=0.4, saturation=0.0, hue=0.0
    )
    view, _ = BYOLAugmenter(8, params, PLAIN)(x * 0.5 + 0.25, seed=SEED)
    before = (x * 0.5 + 0.25).numpy()
    centred = before - before.mean(axis=(1, 2), keepdims=True)
    after = view.numpy() - before.mean(axis=(1, 2), keepdims=True)
    factors = (after * centred).sum(axis=(1, 2, 3)) / (centred**2).sum(axis=(1, 2, 3))
    assert factors.min() >= 0.6 - 1e-4 and factors.max() <= 1.4 + 1e-4
    assert factors.min() < 0.65 and factors.max() > 1.35


def test_saturation_and_hue_follow_the_paper_ranges():
    colour = tf.constant([[[[0.8, 0.4, 0.4]]]], tf.float32)  # H 0, S 0.5, V 0.8
    batch = tf.tile(colour, [300, 4, 4, 1])
    saturation = plain(
        jitter_prob=1.0, color="byol", brightness=0.0, contrast=0.0, saturation=0.2, hue=0.0
    )
    view, _ = BYOLAugmenter(4, saturation, PLAIN)(batch, seed=SEED)
    ratio = hsv(view)[:, 0, 0, 1] / 0.5
    assert ratio.min() >= 0.8 - 1e-4 and ratio.max() <= 1.2 + 1e-4
    assert ratio.min() < 0.82 and ratio.max() > 1.18

    hue = plain(
        jitter_prob=1.0, color="byol", brightness=0.0, contrast=0.0, saturation=0.0, hue=0.1
    )
    view, _ = BYOLAugmenter(4, hue, PLAIN)(batch, seed=SEED)
    shift = hsv(view)[:, 0, 0, 0]
    shift = np.where(shift > 0.5, shift - 1.0, shift)
    assert np.abs(shift).max() <= 0.1 + 1e-4 and np.abs(shift).max() > 0.09
    assert (shift < -0.05).any() and (shift > 0.05).any()


def test_hue_shift_matches_python_colorsys_per_pixel():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(6, 5, 5, 3)).astype("float32")
    deltas = np.array([-0.1, -0.05, 0.0, 0.02, 0.07, 0.1], "float32")
    shifted = _shift_hue(tf.constant(images), tf.constant(deltas)).numpy()
    for image, delta, out in zip(images, deltas, shifted, strict=True):
        for pixel, pixel_out in zip(image.reshape(-1, 3), out.reshape(-1, 3), strict=True):
            h, s, v = colorsys.rgb_to_hsv(*pixel)
            expected = colorsys.hsv_to_rgb((h + delta) % 1, s, v)
            np.testing.assert_allclose(pixel_out, expected, atol=1e-5)
    # An empty selection (no image takes the jitter) keeps its shape.
    assert _shift_hue(tf.zeros([0, 5, 5, 3]), tf.zeros([0])).shape == (0, 5, 5, 3)


def test_jitter_prob_selects_per_sample():
    params = plain(jitter_prob=0.5, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0)
    x = tf.fill([200, 4, 4, 3], 0.5)
    view, _ = BYOLAugmenter(4, params, PLAIN)(x, seed=SEED)
    untouched = view.numpy()[:, 0, 0, 0] == 0.5
    assert 0.35 < untouched.mean() < 0.65


def test_blur_lowers_high_frequency_energy_of_a_checkerboard():
    board = (np.indices((32, 32)).sum(axis=0) % 2).astype("float32")
    board = tf.constant(np.repeat(board[None, :, :, None], 3, axis=-1).repeat(4, axis=0))
    blurred, unblurred = BYOLAugmenter(32, plain(blur_prob=1.0), PLAIN)(board, seed=SEED)
    np.testing.assert_array_equal(unblurred.numpy(), board.numpy())

    def energy(x):
        return float(np.mean(np.diff(x.numpy(), axis=2) ** 2))

    assert energy(blurred) < 0.5 * energy(board)


def test_blur_layer_sigma_is_per_sample():
    layer = RandomGaussianBlur(kernel_size=5, sigma=(0.1, 2.0), prob=1.0)
    impulse = np.zeros((50, 9, 9, 3), "float32")
    impulse[:, 4, 4, :] = 1.0
    centre = layer(tf.constant(impulse), seed=SEED).numpy()[:, 4, 4, 0]
    assert centre.max() > 0.9 and centre.min() < 0.1  # sigma 0.1 keeps it, 2.0 spreads it
    assert default_blur_kernel_size(224) == 23 and default_blur_kernel_size(32) == 3


def test_blurring_only_the_chosen_rows_gives_the_same_images():
    x = tf.random.stateless_uniform([40, 12, 12, 3], [1, 2])
    layer = RandomGaussianBlur(kernel_size=5, prob=0.5)
    whole = layer(x, seed=SEED).numpy()
    chosen = layer(x, seed=SEED, chosen_rows_only=True).numpy()
    untouched = np.all(chosen == x.numpy(), axis=(1, 2, 3))
    assert 10 < untouched.sum() < 30
    np.testing.assert_allclose(chosen, whole, atol=1e-6)
    # A batch in which no row takes the blur comes back as it was.
    never = RandomGaussianBlur(kernel_size=5, prob=1e-9)
    np.testing.assert_array_equal(never(x[:3], seed=SEED, chosen_rows_only=True), x[:3])


def test_views_made_for_tf_data_equal_the_views_made_for_xla():
    crops = tuple(tf.random.stateless_uniform([2, 24, 16, 16, 3], [5, 6]))
    augmenter = make_augmenter("byol", 16, seed=0)
    seed = tf.constant([3, 9], tf.int64)
    for_xla = augmenter.augment_crops(crops, seed)
    for_tf_data = augmenter.augment_crops(crops, seed, in_tf_data=True)
    for view, same in zip(for_xla, for_tf_data, strict=True):
        np.testing.assert_allclose(view.numpy(), same.numpy(), atol=1e-6)


def test_runs_inside_tf_function():
    augmenter = make_augmenter("byol", 16, seed=0)
    x = images(4, 16)
    step = tf.function(lambda batch: augmenter(batch, training=True))
    first, second = step(x), step(x)
    assert first[0].shape == (4, 16, 16, 3)
    assert np.abs(first[0].numpy() - second[0].numpy()).mean() > 0.01  # the seed advances


def test_compiles_with_xla():
    # Jitter off: with it XLA takes 20-80 s to compile on CPU (it does compile).
    augmenter = make_augmenter("byol", 16, seed=0, jitter_prob=0.0)
    compiled = tf.function(lambda batch: augmenter(batch, training=True), jit_compile=True)
    view1, view2 = compiled(images(4, 16))
    assert view1.shape == view2.shape == (4, 16, 16, 3)


def test_pair_dataset_yields_batched_views_and_is_deterministic():
    def first_batch(seed):
        augmenter = make_augmenter("byol", 32, seed=seed)
        pairs = pair_dataset(uint8_examples(), augmenter, batch_size=16, seed=seed)
        return [view.numpy() for view in next(iter(pairs))]

    first, again, other = first_batch(3), first_batch(3), first_batch(4)
    assert first[0].shape == first[1].shape == (16, 32, 32, 3)
    assert first[0].dtype == np.float32 and first[0].min() >= 0 and first[1].max() <= 1
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert np.abs(first[0] - other[0]).mean() > 0.05


def test_pair_dataset_repeats_and_drops_the_remainder():
    pairs = pair_dataset(uint8_examples(40), make_augmenter("cifar", 32), 16, repeat=False)
    assert [view1.shape[0] for view1, _ in pairs] == [16, 16]
    pairs = pair_dataset(uint8_examples(40), make_augmenter("cifar", 32), 16, seed=0)
    assert len(list(pairs.take(5))) == 5


def test_image_batches_are_unit_range_floats_without_labels():
    batches = image_batches(uint8_examples(), 8, seed=0)
    batch = next(iter(batches))
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == tf.float32
    assert float(tf.reduce_min(batch)) >= 0.0 and float(tf.reduce_max(batch)) <= 1.0
    assert float(tf.reduce_max(batch)) > 0.9


def test_presets_and_overrides():
    paper1, paper2 = view_params("byol")
    assert (paper1.blur_prob, paper2.blur_prob) == (1.0, 0.1)
    assert (paper1.solarize_prob, paper2.solarize_prob) == (0.0, 0.2)
    assert all(view.blur_prob == 0 for view in view_params("cifar"))
    assert all(view.flip_prob == 0 and view.hue == 0 for view in view_params("digits"))
    view1, view2 = view_params("byol", crop_area=[0.2, 1], blur_prob=[0.5, 0.0])
    assert view1.crop_area == view2.crop_area == (0.2, 1.0)
    assert (view1.blur_prob, view2.blur_prob) == (0.5, 0.0)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"preset": "imagenet"}, "preset"),
        ({"crop_scale": (0.2, 1.0)}, "crop_scale"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"jitter_prob": -0.1}, "jitter_prob"),
        ({"crop_area": (0.5, 0.2)}, "crop_area"),
        ({"crop_area": (0.0, 1.0)}, "crop_area"),
        ({"crop_area": (0.5, 1.5)}, "crop_area"),
        ({"crop_aspect": (1.0,)}, "crop_aspect"),
        ({"blur_sigma": (2.0, 0.1)}, "blur_sigma"),
        ({"brightness": -0.1}, "brightness"),
        ({"saturation": "high"}, "saturation"),
        ({"hue": 0.6}, "hue"),
        ({"blur_prob": 0.5}, "blur_prob"),
        ({"solarize_prob": (0.0, 2.0)}, "solarize_prob"),
    ],
)
def test_bad_parameters_raise_usage_error_naming_the_key(overrides, key):
    with pytest.raises(UsageError, match=key):
        view_params(**overrides)


def test_augmenter_rejects_bad_views_and_sizes():
    with pytest.raises(UsageError, match="crop_scale"):
        BYOLAugmenter(32, {"crop_scale": (0.1, 1.0)}, PLAIN)
    with pytest.raises(UsageError, match="flip_prob"):
        BYOLAugmenter(32, {"flip_prob": 2}, PLAIN)
    with pytest.raises(UsageError, match="image_size"):
        BYOLAugmenter(0, PLAIN, PLAIN)


def test_config_round_trip_rebuilds_the_same_augmenter():
    augmenter = make_augmenter("digits", 28, seed=5, crop_area=(0.5, 1.0))
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(augmenter)))
    rebuilt = keras.saving.deserialize_keras_object(config)
    assert isinstance(rebuilt, BYOLAugmenter)
    assert (rebuilt.view1, rebuilt.view2, rebuilt.seed) == (augmenter.view1, augmenter.view2, 5)
    x = images(4, 28)
    for ours, theirs in zip(augmenter(x, seed=SEED), rebuilt(x, seed=SEED), strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def _jitter_only(color, **strengths):
    values = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, **strengths}
    return plain(jitter_prob=1.0, color=color, **values)


def test_torchvision_brightness_multiplies_by_a_per_sample_factor():
    grey = tf.fill([300, 4, 4, 3], 0.5)
    view, _ = BYOLAugmenter(4, _jitter_only("torchvision", brightness=0.4), PLAIN)(grey, seed=SEED)
    factor = view.numpy()[:, 0, 0, 0] / 0.5
    assert factor.min() >= 0.6 - 1e-6 and factor.max() <= 1.4 + 1e-6
    assert factor.min() < 0.62 and factor.max() > 1.38


def test_torchvision_contrast_and_saturation_blend_with_grey():
    x = images(200, 4) * 0.5 + 0.25  # inside [0.25, 0.75]: no clipping at these strengths
    grey = (x * tf.constant([0.299, 0.587, 0.114])).numpy().sum(-1, keepdims=True)
    for key, other in (
        ("contrast", grey.mean(axis=(1, 2, 3), keepdims=True)),
        ("saturation", grey),
    ):
        view, _ = BYOLAugmenter(4, _jitter_only("torchvision", **{key: 0.4}), PLAIN)(x, seed=SEED)
        # view = f * x + (1 - f) * other, one f per image: solve for f by least squares.
        offset, target = x.numpy() - other, view.numpy() - other
        factor = (offset * target).sum(axis=(1, 2, 3)) / (offset**2).sum(axis=(1, 2, 3))
        np.testing.assert_allclose(target, factor[:, None, None, None] * offset, atol=1e-5)
        assert factor.min() >= 0.6 - 1e-4 and factor.max() <= 1.4 + 1e-4
        assert factor.min() < 0.65 and factor.max() > 1.35


@pytest.mark.parametrize("stitch", [False, True])
def test_apply_in_order_matches_a_per_image_reference_loop(stitch):
    from byol_keras.augment import apply_in_order

    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(12, 2, 2, 3)), tf.float32)

    def per_image(n):
        return tf.convert_to_tensor(n, tf.float32)[:, None, None, None]

    ops = [
        (lambda im, n: tf.clip_by_value(im * per_image(n), 0.0, 1.0), rng.uniform(0.5, 2, 12)),
        (lambda im, n: im + per_image(n), rng.uniform(-0.3, 0.3, 12)),
        (lambda im, n: tf.square(im) * per_image(n), rng.uniform(0.5, 1.5, 12)),
    ]
    ops = [(op, tf.constant(numbers, tf.float32)) for op, numbers in ops]
    order = np.array([rng.permutation(3) for _ in range(12)])
    result = apply_in_order(x, ops, tf.constant(order), stitch).numpy()
    for i in range(12):
        expected = x[i : i + 1]
        for index in order[i]:
            op, numbers = ops[index]
            expected = op(expected, numbers[i : i + 1])
        np.testing.assert_allclose(result[i], expected[0].numpy(), rtol=1e-6)
    assert len({tuple(row) for row in order}) > 1  # the images really differ in order


@pytest.mark.parametrize("color", ["byol", "torchvision"])
def test_each_image_draws_its_own_jitter_order(monkeypatch, color):
    import byol_keras.augment.augmenter as augment

    seen = []

    def recording(images, ops, order, stitch=False):
        seen.append(order.numpy())
        return apply(images, ops, order, stitch)

    apply = augment.apply_in_order
    monkeypatch.setattr(augment, "apply_in_order", recording)
    strengths = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
    BYOLAugmenter(4, _jitter_only(color, **strengths), PLAIN)(images(2000, 4), seed=SEED)
    (order,) = seen
    assert order.shape == (2000, 4)
    assert (np.sort(order, axis=1) == np.arange(4)).all()  # each row a permutation
    permutations = Counter(map(tuple, order))
    assert len(permutations) == 24 and min(permutations.values()) > 40  # ~83 each


def test_color_semantics_is_validated_and_kept_in_the_config():
    with pytest.raises(UsageError, match="color"):
        view_params("cifar", color="pil")
    augmenter = make_augmenter("cifar", 8, color="torchvision")
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(augmenter))
    assert rebuilt.view1.color == rebuilt.view2.color == "torchvision"
