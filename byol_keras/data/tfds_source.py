"""Any tensorflow-datasets data set with an "image" feature as a source."""

import tensorflow as tf

from byol_keras.data.source import ImageSource, decode_rgb, example_ids, resize_uint8, to_rgb
from byol_keras.errors import UsageError, first_line


def load_tfds_source(
    name: str, split: str, image_size: int, data_dir: str | None = None
) -> ImageSource:
    """Loads the "image" (and, when present, "label") feature of a tfds data set.

    `split` goes to tfds unchanged, so slices like "train[:10%]" work. Data
    that is not yet prepared in `data_dir` is downloaded and prepared first.
    Images of one static shape (CIFAR, MNIST) are resized to `image_size` as
    they are read; images of varying shapes (ImageNet) keep their own size,
    and their encoded bytes are what training caches and crops.

    ```python
    # doctest: skip downloads CIFAR-10 through tensorflow-datasets
    source = load_tfds_source("cifar10", "train[:10%]", image_size=32)
    source.num_examples, source.class_names[0]  # 5000, 'airplane'
    ```
    """
    import tensorflow_datasets as tfds

    builder = _prepared_builder(name, data_dir)
    label = _class_label(builder, name)
    num_examples = _split_size(builder, name, split)
    height, width = builder.info.features["image"].shape[:2]
    one_size = height is not None and height == width
    # Images of their own sizes stay encoded until training crops them.
    decoders = None if one_size else {"image": tfds.decode.SkipDecoding()}
    try:
        raw = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    except (KeyError, ValueError) as error:
        raise UsageError(f"data.split: bad split '{split}' for tfds dataset '{name}'") from error

    def target(example):
        return tf.cast(example["label"], tf.int32) if label is not None else tf.constant(-1)

    def convert(example):
        if one_size:
            return resize_uint8(to_rgb(example["image"]), image_size), target(example)
        return decode_rgb(example["image"]), target(example)

    def encoded(example):
        return example["image"], target(example)

    if num_examples is None:  # split sizes unknown (e.g. mocked data): count once
        num_examples = int(raw.cardinality())
        if num_examples < 0:
            num_examples = int(raw.reduce(0, lambda count, _: count + 1))
    if num_examples == 0:
        raise UsageError(f"data.source: tfds dataset '{name}' split '{split}' is empty")

    num_classes = label.num_classes if label is not None else None
    labelled = f"{num_classes} classes" if num_classes else "unlabelled"
    return ImageSource(
        keys=raw,
        decode=convert,
        num_examples=num_examples,
        num_classes=num_classes,
        class_names=list(label.names) if label is not None else None,
        skipped_files=0,
        description=f"tfds:{name}:{split} ({num_examples} images, {labelled})",
        example_ids=example_ids(_example_names(builder, name, split, num_examples)),
        shuffle_keys=False,
        image_size=image_size if one_size else None,
        encoded=None if one_size else encoded,
    )


def _prepared_builder(name: str, data_dir: str | None):
    """The tfds builder of `name`, downloaded and prepared first when it is not yet."""
    import tensorflow_datasets as tfds

    where = f"data_dir '{data_dir}'" if data_dir else "the default data_dir"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise UsageError(f"data.source: tensorflow-datasets has no dataset '{name}'") from error
    except (ValueError, KeyError) as error:
        raise UsageError(f"data.source: cannot open tfds dataset '{name}': {error}") from error
    if not builder.is_prepared():
        try:
            builder.download_and_prepare()
        except Exception as error:  # no network, no disk space, missing extras...
            reason = first_line(error)
            raise UsageError(
                f"data.source: tfds dataset '{name}' is not prepared in {where} "
                f"({builder.data_dir}) and could not be downloaded: {reason}"
            ) from error
    return builder


def _class_label(builder, name: str):
    """The "label" feature when it is a class index, else None; refuses data without images."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    if "image" not in features:
        keys = ", ".join(features.keys())
        raise UsageError(f"data.source: tfds dataset '{name}' has no 'image' feature ({keys})")
    # A "label" that is not a class index (e.g. a bounding box) is ignored.
    label = dict(features.items()).get("label")  # FeaturesDict has no .get
    if not isinstance(label, tfds.features.ClassLabel):
        label = None
    return label


def _split_size(builder, name: str, split: str) -> int | None:
    """The number of examples in `split`, or None when the builder does not know its splits."""
    num_examples = None
    if builder.info.splits:
        try:
            num_examples = builder.info.splits[split].num_examples
        except (KeyError, ValueError) as error:
            available = ", ".join(sorted(builder.info.splits.keys()))
            raise UsageError(
                f"data.split: tfds dataset '{name}' has no split '{split}' (available: {available})"
            ) from error
    return num_examples


def _example_names(builder, name: str, split: str, num_examples: int) -> list[str]:
    """`tfds:<name>:<split>:<index>` for every example, with slices resolved to absolute ranges.

    So `train` and `train[:10%]` share their first tenth, as they should.
    """
    import tensorflow_datasets as tfds

    if not builder.info.splits:  # split sizes unknown: the spec itself is all we know
        return [f"tfds:{name}:{split}:{index}" for index in range(num_examples)]
    splits = builder.info.splits
    names = []
    for part in tfds.core.ReadInstruction.from_spec(split).to_absolute(splits):
        stop = splits[part.splitname].num_examples if part.to is None else part.to
        names += [f"tfds:{name}:{part.splitname}:{i}" for i in range(part.from_ or 0, stop)]
    return names
