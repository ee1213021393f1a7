"""The evaluation transform: one centre crop (or squash) for evaluation, embed and the exports."""

import io
import tarfile

import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras.augment.eval_transform import RESIZE_MODES, EvalTransform
from byol_keras.config import EvalConfig, load_config
from byol_keras.data import ImageSource, load_source
from byol_keras.data.source import to_unit_range
from byol_keras.errors import UsageError
from byol_keras.evaluation.embed import _named_batches, embed_run
from byol_keras.evaluation.features import Embedder, source_arrays
from byol_keras.export import export_run
from byol_keras.export.run import load_networks
from byol_keras.export.verify import tolerance
from byol_keras.nn.backbones import build_backbone
from tests.helpers.eval_transform import pil_eval_transform
from tests.helpers.export import make_finished_run

PHOTO_SHAPE = (480, 640)  # BCCD's size, a 4:3 photo


def random_photo(shape=PHOTO_SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def disc_photo() -> np.ndarray:
    """A 640x480 grey photo with a black disc of radius 120 at its centre."""
    rows, columns = np.mgrid[: PHOTO_SHAPE[0], : PHOTO_SHAPE[1]] + 0.5
    inside = (rows - PHOTO_SHAPE[0] / 2) ** 2 + (columns - PHOTO_SHAPE[1] / 2) ** 2 < 120**2
    return np.where(inside[..., None], 0, 200).astype(np.uint8).repeat(3, axis=-1)


def dark_extent(pixels: np.ndarray) -> tuple[float, float]:
    """Height and width of the dark shape, in pixels (half-dark pixels count half)."""
    darkness = 1.0 - pixels[..., 0] / (200 / 255)
    return float(darkness.max(axis=1).sum()), float(darkness.max(axis=0).sum())


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        (PHOTO_SHAPE, {}),
        (PHOTO_SHAPE, {"crop_ratio": 0.875}),
        (PHOTO_SHAPE, {"resize": "squash"}),
        ((360, 480), {}),  # a CamVid frame
        ((41, 23), {}),  # portrait, odd margins
        ((9, 64), {"resize": "squash"}),  # enlarged along one axis, shrunk along the other
        ((5, 7), {"crop_ratio": 0.5}),  # smaller than the output: plain bilinear
    ],
)
def test_the_transform_matches_pillows_antialiased_resize_of_the_centre_square(shape, options):
    photo = random_photo(shape)
    pixels = EvalTransform(32, **options)(photo).numpy()
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, pil_eval_transform(photo, 32, **options), atol=2e-6)


def test_the_centre_crop_keeps_the_aspect_and_squash_does_not():
    photo = disc_photo()
    height, width = dark_extent(EvalTransform(32)(photo).numpy())
    # The disc spans 240 of the 480 px short side: 16 of 32 px, round in both directions.
    assert height == pytest.approx(16, abs=0.5) and width == pytest.approx(16, abs=0.5)

    squashed_height, squashed_width = dark_extent(EvalTransform(32, "squash")(photo).numpy())
    assert squashed_height == pytest.approx(16, abs=0.5)
    assert squashed_width == pytest.approx(12, abs=0.5)  # 240 of 640 px: squeezed to 3/4

    zoomed_height, zoomed_width = dark_extent(EvalTransform(32, crop_ratio=0.5)(photo).numpy())
    assert zoomed_height == pytest.approx(32, abs=0.5) and zoomed_width == zoomed_height


def test_the_transform_keeps_the_photos_central_square_whatever_surrounds_it():
    photo = random_photo()
    square = photo[:, 80:560]  # the central 480x480 square
    of_photo = EvalTransform(32)(photo).numpy()
    of_square = EvalTransform(32)(square).numpy()
    # Only the filter of the outermost columns reaches past the square's edge.
    np.testing.assert_allclose(of_photo[:, 1:-1], of_square[:, 1:-1], atol=1e-6)
    assert 1e-3 < np.abs(of_photo - of_square).max() < 0.1


@pytest.mark.parametrize("options", [{}, {"resize": "squash"}])
def test_images_at_the_target_size_pass_exactly(options):
    images = random_photo((4 * 16, 16)).reshape(4, 16, 16, 3)
    transform = EvalTransform(16, **options)
    expected = to_unit_range(images).numpy()
    np.testing.assert_array_equal(transform(images).numpy(), expected)
    np.testing.assert_array_equal(transform.to_uint8(images).numpy(), images)
    # Where the size is unknown until run time (the exported graph), the resampling runs:
    # identity matrices, exact products.
    np.testing.assert_array_equal(transform._resampled(tf.constant(expected)), expected)
    any_size = [tf.TensorSpec([None, None, None, 3], tf.uint8)]
    traced = tf.function(transform, input_signature=any_size)(images)
    # Traced, x / 255 may become x * (1 / 255): one unit in the last place at most.
    np.testing.assert_allclose(traced, expected, rtol=1.2e-7, atol=0)


def test_a_batch_is_transformed_as_its_images_one_by_one():
    images = random_photo((3 * 60, 44)).reshape(3, 60, 44, 3)
    transform = EvalTransform(16, crop_ratio=0.9)
    batch = transform(images).numpy()
    singles = np.stack([transform(image).numpy() for image in images])
    np.testing.assert_allclose(batch, singles, atol=1e-6)
    rounded = transform.to_uint8(images).numpy()
    assert rounded.dtype == np.uint8
    assert np.abs(rounded / 255.0 - batch).max() <= 0.5 / 255 + 1e-6


def test_config_names_the_transform_and_refuses_bad_values():
    config = load_config(overrides=["eval.crop_ratio=0.875", "data.image_size=24"])
    assert EvalTransform.from_config(config) == EvalTransform(24, "center_crop", 0.875)
    assert EvalConfig().resize == "center_crop" and EvalConfig().crop_ratio == 1.0
    squash = load_config(overrides=["eval.resize=squash"])
    assert EvalTransform.from_config(squash).resize == "squash"
    for override, message in [
        ("eval.resize=stretch", "eval.resize: must be one of center_crop, squash"),
        ("eval.crop_ratio=0", "eval.crop_ratio: must be > 0.0"),
        ("eval.crop_ratio=1.5", "eval.crop_ratio: must be <= 1.0"),
    ]:
        with pytest.raises(UsageError, match=message) as error:
            load_config(overrides=[override])
        assert "\n" not in str(error.value)
    assert set(RESIZE_MODES) == {"center_crop", "squash"}


def test_evaluation_of_same_size_sources_is_unchanged_bit_for_bit():
    source = load_source("digits", split="test", image_size=16)
    backbone = build_backbone("tiny", 16, width=4)
    images = np.stack([image.numpy() for image, _ in source.dataset])

    # The Embedder before the transform existed: uint8 / 255 and the backbone, traced.
    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.uint8)])
    def before(batch):
        return tf.cast(backbone(to_unit_range(batch), training=False), tf.float32)

    expected = np.concatenate([before(images[i : i + 64]) for i in range(0, len(images), 64)])
    embedder = Embedder(backbone, batch_size=64)
    np.testing.assert_array_equal(embedder.embed_source(source)[0], expected)
    np.testing.assert_array_equal(embedder.embed(images), expected)
    arrays, _ = source_arrays(source, transform=EvalTransform(16))
    np.testing.assert_array_equal(arrays, images)


def photo_source(photos: list[np.ndarray]) -> ImageSource:
    """A source handing each photo at its own size, as sources of photos do."""
    ragged = tf.ragged.constant([p.tolist() for p in photos], dtype=tf.uint8, ragged_rank=2)

    def decode(index):
        return ragged[index].to_tensor(), tf.cast(index % 2, tf.int32)

    return ImageSource(
        keys=tf.data.Dataset.range(len(photos)),
        decode=decode,
        num_examples=len(photos),
        num_classes=2,
        class_names=["even", "odd"],
        skipped_files=0,
        description=f"{len(photos)} photos of several sizes",
        example_ids=np.arange(len(photos), dtype=np.uint64),
    )


def test_sources_of_several_sizes_are_transformed_per_image_then_batched():
    photos = [
        random_photo(shape, seed) for seed, shape in enumerate([(30, 40), (48, 20), (16, 16)])
    ]
    source = photo_source(photos)
    transform = EvalTransform(16)
    backbone = build_backbone("tiny", 16, width=4)
    expected = backbone(np.stack([pil_eval_transform(p, 16) for p in photos]), training=False)

    features, labels = Embedder(backbone, 2, transform).embed_source(source)
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert labels.tolist() == [0, 1, 0]
    embedder = Embedder(backbone, transform=transform)
    ((pixels, _, names),) = list(_named_batches(source, embedder, batch_size=3))
    assert pixels.dtype == tf.float32 and names.numpy().tolist() == [0, 1, 2]
    np.testing.assert_allclose(embedder.embed_batch(pixels), expected, atol=1e-5)
    images, _ = source_arrays(source, transform=transform)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    with pytest.raises(ValueError, match="several sizes; pass a transform"):
        source_arrays(source)


def test_an_embedder_refuses_a_transform_of_another_size():
    with pytest.raises(ValueError, match="makes 32 px images; the backbone takes 16 px"):
        Embedder(build_backbone("tiny", 16, width=4), transform=EvalTransform(32))


@pytest.fixture(scope="module")
def bccd_photo(shared_data) -> np.ndarray:
    """The first 640x480 blood-smear photograph of BCCD, as RGB uint8."""
    archive = shared_data / "bccd-voc.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent: real-data test skipped")
    with tarfile.open(archive, "r|gz") as members:
        for member in members:
            if member.isfile() and "/JPEGImages/" in member.name:
                with Image.open(io.BytesIO(members.extractfile(member).read())) as image:
                    return np.asarray(image.convert("RGB"))
    pytest.skip(f"{archive} holds no JPEGImages")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.slow
@pytest.mark.data
def test_a_photo_embeds_alike_in_evaluation_embed_the_saved_model_and_onnx(bccd_photo, tmp_path):
    assert bccd_photo.shape == (480, 640, 3)
    run = make_finished_run(tmp_path / "run", image_size=32)
    transform = EvalTransform.from_config(load_config(run.config_path))
    backbone, _ = load_networks(run)
    photo = bccd_photo[np.newaxis]
    # Independent of the code under test: Pillow's crop and resize, then the backbone.
    reference = backbone(pil_eval_transform(bccd_photo, 32)[np.newaxis], training=False).numpy()
    limit = tolerance(reference)

    evaluation = Embedder(backbone, transform=transform).embed(photo)
    manifest = export_run(run.root)
    assert manifest["verification"]["passed"]
    assert manifest["eval_transform"] == transform.describe()
    serve = tf.saved_model.load(manifest["version_dir"]).signatures["serving_default"]
    saved_model = serve(images=tf.constant(photo))["embeddings"].numpy()
    session = onnxruntime.InferenceSession(
        str(run.root / "export" / manifest["artifacts"]["onnx"]["path"]),
        providers=["CPUExecutionProvider"],
    )
    (onnx,) = session.run(["embeddings"], {"images": photo})
    for name, embedding in [("evaluation", evaluation), ("saved_model", saved_model)]:
        assert np.abs(embedding - reference).max() <= limit, name
    assert np.abs(onnx - saved_model).max() <= limit
    # The central square alone embeds as the whole photo: the crop keeps the aspect.
    square = serve(images=tf.constant(photo[:, :, 80:560]))["embeddings"].numpy()
    assert cosine(square, saved_model) > 0.999

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(bccd_photo).save(folder / "BloodImage.png")  # lossless: the same pixels
    source = load_source(f"folder:{folder}", image_size=32)
    handed = next(iter(source.dataset))[0].shape
    if handed != bccd_photo.shape:
        pytest.xfail(
            f"the folder source hands {handed}, not the photo at its own size "
            "(issue 20 item 1: sources keep each image's size)"
        )
    result = embed_run(run.root, f"folder:{folder}", tmp_path / "photo.npy", progress=False)
    assert result["rows"] == 1
    np.testing.assert_array_less(np.abs(np.load(tmp_path / "photo.npy") - saved_model), limit)
