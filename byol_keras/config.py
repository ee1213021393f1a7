"""The run configuration: a typed schema, YAML loading, validation and `--set` overrides.

Every key is documented in README.md ("Configuration"). Unknown keys, wrong
types and out-of-range values raise `UsageError` naming the key.
"""

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from byol_keras.catalog import METHODS, PRESETS, TAU_SCHEDULES, ViewParams
from byol_keras.errors import UsageError
from byol_keras.schema import check_section, quote, shorten, spec

# The tf.distribute strategies `train.distribution` may name; training/distribute.py makes them.
DISTRIBUTIONS = ("none", "mirrored", "multi_worker", "tpu")
# A duration as `train.time_budget` takes it: hours, minutes, seconds, in that order, e.g. 1h30m.
_DURATION = re.compile(r"(?:(\d+\.?\d*)h)?\s*(?:(\d+\.?\d*)m)?\s*(?:(\d+\.?\d*)s)?")


@dataclass
class DataConfig:
    source: str = "digits"
    split: str = "train"
    val_source: str | None = None
    val_split: str = "test"
    data_dir: str | None = None
    image_size: int = spec(32, low=8, high=1024)
    shuffle_buffer: int = spec(10_000, low=1)
    cache: bool = True
    # folder sources: larger files, and images whose header states more pixels, are skipped.
    max_file_mb: float = spec(64.0, low=0.0, open_low=True)
    max_image_pixels: int = spec(89_478_485, low=1)  # Pillow's Image.MAX_IMAGE_PIXELS


def _overrides(self) -> dict:
    """The view parameters that the config sets, for `make_augmenter(**overrides)`."""
    skip = {"preset", "on_device"}
    return {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in dataclasses.asdict(self).items()
        if key not in skip and value is not None
    }


def _view_field(view_field: dataclasses.Field, hint) -> tuple:
    """`augment.<key>` for one `ViewParams` field: null takes the preset's, within its range."""
    if view_field.metadata["paired"] or typing.get_origin(hint) is tuple:
        hint = list[float]  # a range [low, high], or a paired number [view1, view2]
    return view_field.name, hint | None, spec(None, **view_field.metadata)


# The fields, ranges and order of `ViewParams` (byol_keras/catalog.py), each null by default.
AugmentConfig = dataclasses.make_dataclass(
    "AugmentConfig",
    [
        ("preset", str, spec("byol", choices=tuple(PRESETS))),
        ("on_device", bool, field(default=False)),
        *(
            _view_field(f, typing.get_type_hints(ViewParams)[f.name])
            for f in dataclasses.fields(ViewParams)
        ),
    ],
    namespace={
        "__doc__": "Null values take the preset's; blur_prob and solarize_prob are [view1, view2].",
        "overrides": _overrides,
        "__module__": __name__,
    },
)


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    stem: str = spec("auto", choices=("auto", "cifar", "imagenet"))
    width: int = spec(64, low=1)
    projection_dim: int = spec(256, low=1)
    projector_hidden_dim: int = spec(4096, low=1)
    predictor_hidden_dim: int = spec(4096, low=1)
    tau_base: float = spec(0.996, low=0.0, high=1.0)
    # byol_keras/methods/: one class per method; the registry there lists the names.
    method: str = spec("byol", choices=tuple(METHODS))
    predictor: bool | None = None  # null: the method's own (byol, simsiam yes; simclr no)
    tau_schedule: str = spec("cosine", choices=TAU_SCHEDULES)  # constant: τ = tau_base
    temperature: float = spec(0.2, low=0.0, open_low=True)  # NT-Xent's, simclr only
    # The heads' BatchNorm is always synchronised across replicas; this adds the backbone's.
    sync_batchnorm_backbone: bool = False
    # Backbone weights to start from: a .keras or .weights.h5 file, or imagenet (init_weights.py).
    init_weights: str | None = None


@dataclass
class OptimizerConfig:
    """The learning rate is base_lr × batch_size / 256 (lr_scaling: linear)."""

    name: str = spec("lars", choices=("lars", "sgd", "adam", "adamw"))
    base_lr: float = spec(0.2, low=0.0, open_low=True)
    lr_scaling: str = spec("linear", choices=("linear", "none"))
    warmup_epochs: float = spec(10.0, low=0.0)
    weight_decay: float = spec(1.5e-6, low=0.0)
    momentum: float = spec(0.9, low=0.0, high=1.0)
    trust_coefficient: float = spec(1e-3, low=0.0, open_low=True)


@dataclass
class TrainConfig:
    """batch_size is the global batch: tf.distribute splits it evenly across replicas."""

    epochs: int = spec(100, low=1)
    batch_size: int = spec(256, low=2)
    steps_per_epoch: int | None = spec(None, low=1)
    seed: int = spec(0, low=0)
    accumulation_steps: int = spec(1, low=1)
    precision: str = spec("float32", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    jit_compile: bool = False
    distribution: str = spec("none", choices=DISTRIBUTIONS)
    checkpoint_every_steps: int | None = spec(None, low=1)
    keep_checkpoints: int = spec(2, low=1)
    collapse_threshold: float = spec(0.05, low=0.0)
    collapse_patience: int = spec(3, low=1)
    deterministic: bool = False
    verbose: int = spec(1, low=0, high=2)
    # A wall-clock limit (15m, 90s, 1h30m): the run sets its own length (training/budget.py).
    time_budget: str | None = None
    # At the end, BatchNorm statistics re-estimated on images as inference sees them (pretrain.py).
    precise_bn_batches: int = spec(20, low=0)

    def __post_init__(self):
        if self.time_budget is None:
            return
        try:
            parse_duration(self.time_budget)
        except ValueError:
            raise UsageError(
                f"train.time_budget: expected a duration such as 15m, 90s or 1h30m, "
                f"got {quote(self.time_budget)}"
            ) from None
        if self.distribution == "multi_worker":
            # Each worker would measure its own speed and plan its own number of steps.
            raise UsageError(
                "train.time_budget: not supported with train.distribution multi_worker"
            )

    @property
    def time_budget_seconds(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget)


@dataclass
class EvalConfig:
    knn_every_epochs: int = spec(0, low=0)
    knn_k: int = spec(200, low=1)
    knn_temperature: float = spec(0.1, low=0.0, open_low=True)
    knn_max_train: int | None = spec(None, low=1)
    final_linear_probe: bool = False
    # `byol-keras evaluate`: fitted on train_split of the labelled source, tested on data.val_split.
    train_split: str = "train"
    max_train: int | None = spec(None, low=1)  # seeded random subset of train_split
    batch_size: int = spec(256, low=1)
    linear_l2: float | None = spec(None, low=0.0)  # null: chosen on a held-out 10%
    linear_max_iter: int = spec(500, low=1)
    finetune_epochs: int = spec(20, low=1)
    finetune_lr: float = spec(0.05, low=0.0, open_low=True)
    # The evaluation transform (augment/eval_transform.py) of every protocol but segment,
    # of `embed` and of the exported models: resize the short side, then a central square
    # of crop_ratio × the short side; or squash the whole image (aspect lost).
    resize: str = spec("center_crop", choices=("center_crop", "squash"))
    crop_ratio: float = spec(1.0, low=0.0, high=1.0, open_low=True)


@dataclass
class SegmentConfig:
    """`evaluate --protocol segment`: defaults for CamVid at a third of its size on a CPU.

    image_size is [height, width], the working resolution every image and mask
    is resized to; crop_size (null: image_size) is the training crop after the
    random rescaling by a factor in scale_range. class_names is one
    comma-separated string. CamVid: num_classes 11, ignore_index 11 (void).
    precise_bn_batches: training batches over which BatchNorm statistics are
    re-estimated before each val score (0: the moving averages as trained);
    each costs about a forward pass of the segmenter, a third of a training step.
    seed (null: train.seed) seeds the label subset, the head's initial weights
    and the fine-tuning; a set seed gets its own result file (`-seed<N>`).
    """

    num_classes: int = spec(11, low=1, high=255)
    ignore_index: int | None = spec(11, low=0, high=255)
    class_names: str | None = None
    image_size: list[int] = spec([120, 160], low=8, high=4096)
    crop_size: list[int] | None = spec(None, low=8, high=4096)
    scale_range: list[float] = spec([0.75, 1.5], low=0.0, open_low=True, ordered=True)
    jitter: float = spec(0.2, low=0.0, high=1.0)
    epochs: int = spec(30, low=1)
    batch_size: int = spec(8, low=1)
    lr: float = spec(1e-3, low=0.0, open_low=True)
    weight_decay: float = spec(1e-4, low=0.0)
    decoder_channels: int = spec(64, low=1)
    freeze_backbone: bool = False
    precise_bn_batches: int = spec(10, low=0)
    seed: int | None = spec(None, low=0)

    def __post_init__(self):
        # A void index among the classes would be scored as a class and trained as void.
        if self.ignore_index is not None and self.ignore_index < self.num_classes:
            raise UsageError(
                f"segment.ignore_index: {self.ignore_index} is one of the "
                f"{self.num_classes} classes (0..{self.num_classes - 1}); the void index must "
                "be >= segment.num_classes, or null when the masks have no void"
            )


@dataclass
class DetectConfig:
    """`evaluate --protocol detect`: a RetinaNet on the backbone's pyramid; defaults for BCCD.

    image_size is [height, width], both multiples of 32 (the P3-P5 levels
    must tile it): every image is resized keeping its aspect to fit inside,
    then padded at the bottom and right. BCCD's 480x640 photos become 240x320
    in 256x320, so its ~40 px platelets are ~20 px, hence anchor_sizes (one
    base size per level P3-P7, strides 8-128) starting at 16. score_threshold
    is the lowest score a detection keeps (0.05: low, as COCO AP wants every
    ranked guess); max_detections per image (COCO scores 100). head_width:
    filters of the class and box heads' convolutions (KerasCV's own are 256;
    they dominate a CPU's cost, and a few classes need fewer); head_init their
    kernels: KerasCV's orthogonal, or N(0, 0.01) as in the focal-loss paper (which
    fine-tuned BCCD worse in 200 steps for both arms: benchmarks/RESULTS.md).
    norm: "group" puts GroupNorm on each pyramid level as the heads read it and
    after every head convolution (Detectron2's GN heads); "none" is KerasCV's,
    under which a pretrained backbone's larger features set the heads' scale
    (BCCD, 10% of the labels: 47.6% -> 68.2% test AP50 pretrained, 70.4% either
    way random: benchmarks/RESULTS.md).
    precise_bn_batches: training batches over which BatchNorm statistics are
    re-estimated before each val score (0: the moving averages as trained);
    each costs a forward pass of the backbone alone, about 6% of a training step.
    seed (null: train.seed) seeds the label subset, the heads' initial weights
    and the augmentation; a set seed gets its own result file (`-seed<N>`).
    """

    image_size: list[int] = spec([256, 320], low=32, high=4096)
    epochs: int = spec(20, low=1)
    batch_size: int = spec(8, low=1)
    lr: float = spec(3e-4, low=0.0, open_low=True)
    weight_decay: float = spec(1e-4, low=0.0)
    anchor_sizes: list[float] = spec([16.0, 32.0, 64.0, 128.0, 256.0], low=1.0, length=5)
    scale_range: list[float] = spec([0.75, 1.25], low=0.0, open_low=True, ordered=True)
    freeze_backbone: bool = False
    score_threshold: float = spec(0.05, low=0.0, high=1.0)
    max_detections: int = spec(100, low=1)
    head_width: int = spec(64, low=1)
    head_init: str = spec("orthogonal", choices=("orthogonal", "normal"))
    norm: str = spec("group", choices=("none", "group"))
    precise_bn_batches: int = spec(20, low=0)
    seed: int | None = spec(None, low=0)

    def __post_init__(self):
        if any(side % 32 for side in self.image_size):
            raise UsageError(
                f"detect.image_size: {self.image_size} must be multiples of 32 "
                "(the feature pyramid halves it five times)"
            )


@dataclass
class Config:
    """A whole run's settings, one section per stage of the training story.

    Build it with `load_config`, which validates every key; `to_dict()` gives
    the plain dict written to a run's `config.yaml`.

    Args:
        data: Where the images come from and their size (`DataConfig`).
        augment: The two views (`AugmentConfig`).
        model: The backbone and heads, and τ (`ModelConfig`).
        optimizer: The update rule and learning-rate schedule (`OptimizerConfig`).
        train: Epochs, batch size, precision, distribution, checkpoints (`TrainConfig`).
        eval: The kNN monitor and evaluation protocols (`EvalConfig`).
        segment: The segmentation protocol (`SegmentConfig`).
        detect: The detection protocol (`DetectConfig`).

    ```python
    config = load_config(overrides=["train.epochs=3"])
    config.train.epochs, config.to_dict()["data"]["image_size"]
    ```
    """

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Reads a YAML config, applies `KEY=VALUE` overrides, and validates it.

    Without a path the schema's defaults apply.

    Args:
        path: A YAML file; `None` uses the defaults.
        overrides: `SECTION.KEY=VALUE` strings, applied in order.

    Returns:
        A validated `Config`. Bad input raises `UsageError` naming the key.

    ```python
    config = load_config("configs/quickstart.yaml", ["train.epochs=3"])
    assert config.train.epochs == 3
    ```
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            first_line = shorten(str(error).splitlines()[0])
            raise UsageError(f"config file {str(path)!r} is not valid YAML: {first_line}") from None
        except RecursionError:
            raise UsageError(f"config file {str(path)!r} is nested too deeply") from None
        if not isinstance(raw, dict):
            raise UsageError(f"config file {str(path)!r} must hold a mapping of sections")
    for override in overrides or []:
        _apply_override(raw, override)
    return from_dict(raw)


def from_dict(raw: dict) -> Config:
    """Builds a validated `Config` from nested dicts (as written to config.yaml)."""
    sections = {}
    for section in dataclasses.fields(Config):
        values = raw.get(section.name) or {}
        if not isinstance(values, dict):
            raise UsageError(f"{section.name}: expected a mapping of keys, got {quote(values)}")
        sections[section.name] = check_section(section.name, section.default_factory, values)
    unknown = sorted(set(raw) - set(sections), key=str)
    if unknown:
        raise UsageError(
            f"{shorten(str(unknown[0]))}: unknown config section (known: {', '.join(sections)})"
        )
    return Config(**sections)


def _apply_override(raw: dict, override: str) -> None:
    key, separator, text = override.partition("=")
    if not separator or "." not in key:
        raise UsageError(
            f"--set {quote(override)}: expected SECTION.KEY=VALUE, e.g. train.epochs=3"
        )
    section, name = key.strip().split(".", 1)
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        value = text
    target = raw.setdefault(section, {})
    if not isinstance(target, dict):
        raise UsageError(f"{section}: expected a mapping of keys, got {quote(target)}")
    target[name] = value


def parse_duration(text: str) -> float:
    """The seconds in a duration such as `15m`, `90s`, `1h30m` or `1.5h`; ValueError otherwise.

    ```python
    assert parse_duration("1h30m") == 5400.0 and parse_duration("90s") == 90.0
    ```
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r}")
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise ValueError(f"not a positive duration: {text!r}")
    return total


def save_config(config: Config, path: str | Path) -> None:
    """Writes the resolved config as YAML, so a run directory documents itself."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
