"""Views cropped from each original image (issue 20): geometry, torchvision's sampler, JPEG crops.

The expected figures come from a NumPy reimplementation of torchvision's
`RandomResizedCrop.get_params` (torch is not installed here), written from
its published algorithm, independently of the TensorFlow sampler under test.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras.augment import image_batches, make_augmenter, pair_dataset
from byol_keras.augment.crops import crop_pair, crop_window, decode_jpeg_for_crops, scaled_crop
from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.catalog import ViewParams
from byol_keras.data import load_source
from byol_keras.data.source import resize_uint8
from byol_keras.errors import UsageError
from byol_keras.evaluation.features import source_arrays

AREA, ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)
# Colour, grey, blur and solarisation off: a view's pixels are its crop's.
GEOMETRY_ONLY = dict(
    jitter_prob=0.0, grayscale_prob=0.0, blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0)
)


def torchvision_windows(height, width, count, rng, area=AREA, aspect=ASPECT):
    """`count` windows (top, left, h, w) by torchvision's published RandomResizedCrop.get_params."""
    windows = np.empty([count, 4], np.int64)
    log_ratio = (math.log(aspect[0]), math.log(aspect[1]))
    for n in range(count):
        for _ in range(10):
            target = height * width * rng.uniform(*area)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                windows[n] = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
                break
        else:
            in_ratio = width / height
            if in_ratio < min(aspect):
                w, h = width, int(round(width / min(aspect)))
            elif in_ratio > max(aspect):
                h, w = height, int(round(height * max(aspect)))
            else:
                w, h = width, height
            windows[n] = (height - h) // 2, (width - w) // 2, h, w
    return windows


def both_halves(left, crop_width, half):
    """Whether each half of an image split at column `half` covers 10% or more of the crop."""
    red = np.clip(half - left, 0, crop_width) / crop_width
    return (red >= 0.1) & (red <= 0.9)


def view_holds_both(views):
    """Per view: red (left half) and blue (right half) each cover at least 10% of its pixels."""
    red = (views[..., 0] > views[..., 2]).mean(axis=(1, 2))
    return (red >= 0.1) & (red <= 0.9)


def tf_windows(height, width, count, area=AREA, aspect=ASPECT):
    seeds = tf.data.Dataset.range(count).map(
        lambda index: tf.stack([tf.constant(0, tf.int64), index])
    )
    windows = seeds.map(lambda seed: crop_window(height, width, area, aspect, seed))
    return np.stack(list(windows.batch(count).as_numpy_iterator())[0:1])[0]


def wide_image(height=256, width=1024):
    pixels = np.zeros([height, width, 3], np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    return pixels


@pytest.mark.parametrize("height, width", [(256, 1024), (360, 480), (32, 32), (1000, 40)])
def test_crop_window_follows_torchvision_get_params(height, width):
    count = 3000
    ours = tf_windows(height, width, count)
    reference = torchvision_windows(height, width, 20000, np.random.default_rng(0))
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    for ours_values, reference_values in (
        (h * w / (height * width), reference[:, 2] * reference[:, 3] / (height * width)),
        (np.log(w / h), np.log(reference[:, 3] / reference[:, 2])),
        ((left + w / 2) / width, (reference[:, 1] + reference[:, 3] / 2) / width),
    ):
        # Quantiles of 3000 draws lie within ~0.03 of the distribution's.
        quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
        spread = np.ptp(reference_values) or 1.0
        gap = np.abs(np.quantile(ours_values, quantiles) - np.quantile(reference_values, quantiles))
        assert (gap <= 0.04 * spread + 1e-6).all(), (gap, spread)


def test_crop_window_falls_back_to_the_central_crop_clamped_to_the_aspect_range():
    # A 10 x 1000 strip: no crop of 8% or more with aspect <= 4/3 fits in 10 rows.
    windows = tf_windows(10, 1000, 5)
    expected = torchvision_windows(10, 1000, 1, np.random.default_rng(0))[0]
    np.testing.assert_array_equal(windows, np.tile(expected, (5, 1)))
    np.testing.assert_array_equal(expected, [0, (1000 - 13) // 2, 10, 13])


def test_views_follow_the_original_geometry_not_a_squashed_thumbnail(tmp_path):
    """The acceptance test of issue 20: crops of a 1024x256 red|blue image."""
    pixels = wide_image()
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    Image.fromarray(pixels).save(tmp_path / "wide.jpg", quality=95)
    size, batch, batches = 32, 100, 15
    augmenter = make_augmenter("byol", image_size=size, seed=0, **GEOMETRY_ONLY)
    rng = np.random.default_rng(1)

    source = load_source(f"folder:{tmp_path}", image_size=size)
    assert source.image_size is None
    pairs = pair_dataset(source, augmenter, batch, seed=3).take(batches)
    original = np.concatenate([view_holds_both(v.numpy()) for pair in pairs for v in pair])
    windows = torchvision_windows(256, 1024, 20000, rng)
    expected = both_halves(windows[:, 1], windows[:, 3], 512).mean()
    assert 0.28 < expected < 0.38  # "about a third"
    # 3000 views: one standard deviation of the fraction is ~0.009.
    assert abs(original.mean() - expected) < 0.04, (original.mean(), expected)

    thumbnail = resize_uint8(tf.constant(pixels), size)
    squashed = tf.data.Dataset.from_tensors((thumbnail, -1)).repeat(batch)
    pairs = pair_dataset(squashed, augmenter, batch, seed=3).take(batches)
    from_thumbnail = np.concatenate([view_holds_both(v.numpy()) for pair in pairs for v in pair])
    square = torchvision_windows(1024, 1024, 20000, rng)
    expected_square = both_halves(square[:, 1], square[:, 3], 512).mean()
    assert 0.85 < expected_square < 0.95  # "about 90%"
    assert abs(from_thumbnail.mean() - expected_square) < 0.04, from_thumbnail.mean()


def smooth_jpeg(path, height=300, width=400, cells=(6, 8)):
    """A JPEG of smooth colour gradients: a few random cells, bilinearly enlarged."""
    rng = np.random.default_rng(0)
    smooth = tf.image.resize(rng.uniform(0, 255, [1, *cells, 3]), [height, width])[0]
    Image.fromarray(np.uint8(smooth.numpy())).save(path, quality=90)
    return tf.io.read_file(str(path))


def test_a_jpeg_is_decoded_once_at_full_scale_when_a_crop_is_under_twice_the_view(tmp_path):
    data = smooth_jpeg(tmp_path / "photo.jpg")
    decoded = tf.io.decode_jpeg(data)
    # Crops of 2-5% of 300x400: sides of 49 to 77 px, under 2 x 48.
    small = ViewParams(crop_area=(0.02, 0.05))
    for index in range(5):
        seed = tf.constant([4, index])
        from_bytes = crop_pair(data, (small, small), 48, seed)
        from_pixels = crop_pair(decoded, (small, small), 48, seed)
        for a, b in zip(from_bytes, from_pixels, strict=True):
            assert a.shape == (48, 48, 3)
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_large_crop_is_decoded_at_a_reduced_dct_scale_close_to_the_full_decode(tmp_path):
    data = smooth_jpeg(tmp_path / "photo.jpg")
    full = tf.io.decode_jpeg(data).numpy()
    for index in range(5):
        # Crops of 50-100% of 300x400: every side >= 4 x 48, so libjpeg decodes at 1/4.
        box = crop_window(300, 400, (0.5, 1.0), ASPECT, tf.constant([4, index], tf.int64))
        ratio, image = decode_jpeg_for_crops(data, [box], 48)
        assert int(ratio) == 4
        crop = scaled_crop(image, box, ratio)
        view = tf.image.resize(tf.cast(crop, tf.float32), [48, 48], antialias=True).numpy()
        # The same window (edges rounded to multiples of 4) cut from the full decode.
        top, left, _, _ = ((box.numpy() + 2) // 4) * 4
        height, width = 4 * crop.shape[0], 4 * crop.shape[1]
        window = full[top : top + height, left : left + width].astype(np.float32)
        expected = tf.image.resize(window, [48, 48], antialias=True).numpy()
        # libjpeg's scaled IDCT filters a little differently and rounds ~0.8 levels up.
        assert np.abs(view - expected).mean() < 1.5
        assert np.abs(view - expected).max() < 6


def test_the_dct_scale_is_the_coarsest_that_keeps_every_crop_at_the_view_size():
    data = tf.io.encode_jpeg(tf.zeros([1000, 1200, 3], tf.uint8))
    cases = [  # (boxes' heights and widths, view size, ratio, decoded shape)
        ([(800, 800)], 96, 8, (125, 150)),
        ([(800, 800), (500, 900)], 96, 4, (250, 300)),
        ([(192, 1000)], 96, 2, (500, 600)),
        ([(191, 1000)], 96, 1, (1000, 1200)),
        ([(1000, 1200)], 224, 4, (250, 300)),
    ]
    for sides, size, ratio, shape in cases:
        boxes = [tf.constant([0, 0, h, w]) for h, w in sides]
        got_ratio, image = decode_jpeg_for_crops(data, boxes, size)
        assert (int(got_ratio), tuple(image.shape[:2])) == (ratio, shape), sides


def test_a_window_is_cut_from_the_scaled_image_with_its_edges_rounded():
    image = tf.reshape(tf.range(50 * 60, dtype=tf.int32), [50, 60, 1])
    # Box (top 9, left 10, 21 x 200) at 1/4: top round(9/4)=2, left round(10/4)=3 (half up),
    # height round(21/4)=5, width round(200/4)=50, clipped to the 57 columns left.
    crop = scaled_crop(image, tf.constant([9, 10, 21, 200]), 4)
    np.testing.assert_array_equal(crop.numpy(), image.numpy()[2:7, 3:53])
    tiny = scaled_crop(image, tf.constant([199, 237, 1, 1]), 4)
    np.testing.assert_array_equal(tiny.numpy(), image.numpy()[49:50, 59:60])


def test_a_shrinking_crop_is_antialiased():
    # One-pixel stripes: an unfiltered 8x shrink would land on single stripes.
    stripes = np.zeros([256, 256, 3], np.uint8)
    stripes[:, ::2] = 255
    whole = ViewParams(crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0), flip_prob=0.0)
    view, _ = crop_pair(tf.constant(stripes), (whole, whole), 32, tf.constant([0, 0]))
    np.testing.assert_allclose(view.numpy(), 0.5, atol=0.02)


def test_pairs_cropped_per_image_are_reproducible_and_skip_files_that_vanish(tmp_path):
    for index, width in enumerate([40, 64, 90]):
        Image.fromarray(wide_image(30, width)).save(tmp_path / f"{index}.png")
    source = load_source(f"folder:{tmp_path}", image_size=16)
    augmenter = make_augmenter("byol", image_size=16, seed=0)

    def first_batches(pairs):
        return [view.numpy() for pair in pairs.take(3) for view in pair]

    def pairs(seed):
        return pair_dataset(source, augmenter, 2, seed=seed, cache=False)

    first, again, other = first_batches(pairs(5)), pairs(5), first_batches(pairs(6))
    for a, b in zip(first, first_batches(again), strict=True):
        assert a.shape == (2, 16, 16, 3) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    (tmp_path / "1.png").unlink()
    # A new pass of the same pipeline: the run goes on with the files left.
    assert len(first_batches(again)) == 6


def test_on_device_views_of_crops_cut_in_tf_data_equal_the_tf_data_views(tmp_path, tiny_byol):
    for index, width in enumerate([40, 64, 90, 30]):
        Image.fromarray(wide_image(30, width)).save(tmp_path / f"{index}.jpg")
    source = load_source(f"folder:{tmp_path}", image_size=16)
    augmenter = make_augmenter("byol", image_size=16, seed=0)
    with pytest.raises(UsageError, match="augmenter="):
        image_batches(source, 2)
    crops = image_batches(source, 2, seed=1, augmenter=augmenter)
    pairs = pair_dataset(source, augmenter, 2, seed=1)
    for index, (batch, (view1, view2)) in enumerate(zip(crops.take(2), pairs.take(2), strict=True)):
        assert batch.shape == (2, 2, 16, 16, 3)
        # The batch's seed in pair_dataset is (seed, batch index): the same views.
        on_device = augmenter(batch, training=True, seed=tf.constant([1, index], tf.int64))
        np.testing.assert_allclose(on_device[0], view1, atol=1e-6)
        np.testing.assert_allclose(on_device[1], view2, atol=1e-6)
    model = tiny_byol(image_size=16, augmenter=augmenter)
    model.compile(optimizer="sgd")
    history = model.fit(crops, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_evaluation_takes_images_of_their_own_sizes_through_its_transform(tmp_path):
    Image.fromarray(wide_image(30, 50)).save(tmp_path / "a.png")
    source = load_source(f"folder:{tmp_path}", image_size=16)
    images, _ = source_arrays(source, transform=EvalTransform(16))
    assert images.shape == (1, 16, 16, 3)  # the central 30x30 square: half red, half blue
    np.testing.assert_array_equal(images[0, :, :7], np.broadcast_to([255, 0, 0], (16, 7, 3)))
    np.testing.assert_array_equal(images[0, :, 9:], np.broadcast_to([0, 0, 255], (16, 7, 3)))
    with pytest.raises(ValueError, match="several sizes; pass a transform"):
        source_arrays(source)


def test_unusual_files_give_views_of_their_colour(tmp_path):
    colour = (200, 40, 90)
    files = {
        "cmyk.jpg": Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
        "grey.jpg": Image.new("L", (40, 30), 120),
        "one_bit.bmp": Image.new("1", (40, 30), 1),  # decoded by Pillow, handed over as PNG
        "rgba.png": Image.new("RGBA", (40, 30), (*colour, 7)),
        "palette.gif": Image.new("RGB", (40, 30), colour),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    source = load_source(f"folder:{tmp_path}", image_size=8)
    assert source.image_size is None and source.num_examples == len(files)
    plain = make_augmenter("byol", image_size=8, seed=0, flip_prob=0.0, **GEOMETRY_ONLY)
    expected = {
        "cmyk.jpg": np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"))[0, 0],
        "grey.jpg": (120, 120, 120),
        "one_bit.bmp": (255, 255, 255),
        "rgba.png": colour,
        "palette.gif": colour,
    }
    pairs = pair_dataset(source, plain, len(files), seed=0, shuffle_buffer=1, repeat=False)
    views = next(iter(pairs))[0].numpy()
    # shuffle_buffer=1 keeps the source's seeded order of its keys: match by colour.
    got = sorted(tuple(np.round(view.mean(axis=(0, 1)) * 255)) for view in views)
    want = sorted(tuple(float(v) for v in rgb) for rgb in expected.values())
    np.testing.assert_allclose(got, want, atol=4)


@pytest.mark.slow
@pytest.mark.data
def test_camvid_frames_keep_their_size_and_the_cache_holds_their_files(camvid_folder):
    source = load_source(f"segfolder:{camvid_folder}", split="train+val", image_size=96)
    assert source.image_size is None and source.num_examples == 468
    image, _ = next(iter(source.dataset))
    assert image.shape == (360, 480, 3)
    cached = sum(len(data) for data, _ in source.shuffled(0, encoded=True).as_numpy_iterator())
    files = sum(
        path.stat().st_size
        for s in ("train", "val")
        for path in (camvid_folder / s / "images").iterdir()
    )
    assert cached == files  # the README's 23.3 MB: the JPEG files, byte for byte
    augmenter = make_augmenter("byol", image_size=96, seed=0)
    view1, view2 = next(iter(pair_dataset(source, augmenter, 8, seed=0)))
    assert view1.shape == view2.shape == (8, 96, 96, 3)
