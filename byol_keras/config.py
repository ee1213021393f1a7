"""The run configuration: a typed schema, YAML loading, validation and `--set` overrides.

Every key is documented in README.md ("Configuration"). Unknown keys, wrong
types and out-of-range values raise `UsageError` naming the key.
"""

import dataclasses
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from byol_keras.errors import UsageError
from byol_keras.methods import METHODS, TAU_SCHEDULES

# A number as users write it, e.g. 1e-4, which YAML 1.1 leaves a string; not nan or inf.
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_QUOTE_CHARS = 80
# reprlib stops at a few items per level and a few levels, so the repr of a
# value that shares sub-lists a billion times is built in bounded time.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _QUOTE_CHARS

# The tf.distribute strategies `train.distribution` may name; training/distribute.py makes them.
DISTRIBUTIONS = ("none", "mirrored", "multi_worker", "tpu")
# A duration as `train.time_budget` takes it: hours, minutes, seconds, in that order, e.g. 1h30m.
_DURATION = re.compile(r"(?:(\d+\.?\d*)h)?\s*(?:(\d+\.?\d*)m)?\s*(?:(\d+\.?\d*)s)?")


def _spec(default, *, low=None, high=None, choices=None, open_low=False, ordered=False, length=2):
    metadata = {
        "low": low,
        "high": high,
        "choices": choices,
        "open_low": open_low,
        "ordered": ordered,  # a [low, high] range rather than a [view1, view2] pair
        "length": length,  # how many items a list holds
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    source: str = "digits"
    split: str = "train"
    val_source: str | None = None
    val_split: str = "test"
    data_dir: str | None = None
    image_size: int = _spec(32, low=8, high=1024)
    shuffle_buffer: int = _spec(10_000, low=1)
    cache: bool = True
    # folder sources: larger files, and images whose header states more pixels, are skipped.
    max_file_mb: float = _spec(64.0, low=0.0, open_low=True)
    max_image_pixels: int = _spec(89_478_485, low=1)  # Pillow's Image.MAX_IMAGE_PIXELS


@dataclass
class AugmentConfig:
    """Null values take the preset's; blur_prob and solarize_prob are [view1, view2]."""

    preset: str = _spec("byol", choices=("byol", "cifar", "digits"))
    on_device: bool = False
    crop_area: list[float] | None = _spec(None, low=0.0, high=1.0, open_low=True, ordered=True)
    crop_aspect: list[float] | None = _spec(None, low=0.0, open_low=True, ordered=True)
    flip_prob: float | None = _spec(None, low=0.0, high=1.0)
    jitter_prob: float | None = _spec(None, low=0.0, high=1.0)
    brightness: float | None = _spec(None, low=0.0)
    contrast: float | None = _spec(None, low=0.0)
    saturation: float | None = _spec(None, low=0.0)
    hue: float | None = _spec(None, low=0.0, high=0.5)
    grayscale_prob: float | None = _spec(None, low=0.0, high=1.0)
    blur_prob: list[float] | None = _spec(None, low=0.0, high=1.0)
    blur_sigma: list[float] | None = _spec(None, low=0.0, open_low=True, ordered=True)
    solarize_prob: list[float] | None = _spec(None, low=0.0, high=1.0)
    color: str | None = _spec(None, choices=("byol", "torchvision"))

    def overrides(self) -> dict:
        """The view parameters that the config sets, for `make_augmenter(**overrides)`."""
        skip = {"preset", "on_device"}
        return {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in dataclasses.asdict(self).items()
            if key not in skip and value is not None
        }


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    stem: str = _spec("auto", choices=("auto", "cifar", "imagenet"))
    width: int = _spec(64, low=1)
    projection_dim: int = _spec(256, low=1)
    projector_hidden_dim: int = _spec(4096, low=1)
    predictor_hidden_dim: int = _spec(4096, low=1)
    tau_base: float = _spec(0.996, low=0.0, high=1.0)
    # byol_keras/methods/: one class per method; the registry there lists the names.
    method: str = _spec("byol", choices=tuple(METHODS))
    predictor: bool | None = None  # null: the method's own (byol, simsiam yes; simclr no)
    tau_schedule: str = _spec("cosine", choices=TAU_SCHEDULES)  # constant: τ = tau_base
    temperature: float = _spec(0.2, low=0.0, open_low=True)  # NT-Xent's, simclr only
    # The heads' BatchNorm is always synchronised across replicas; this adds the backbone's.
    sync_batchnorm_backbone: bool = False
    # Backbone weights to start from: a .keras or .weights.h5 file, or imagenet (init_weights.py).
    init_weights: str | None = None


@dataclass
class OptimizerConfig:
    """The learning rate is base_lr × batch_size / 256 (lr_scaling: linear)."""

    name: str = _spec("lars", choices=("lars", "sgd", "adam", "adamw"))
    base_lr: float = _spec(0.2, low=0.0, open_low=True)
    lr_scaling: str = _spec("linear", choices=("linear", "none"))
    warmup_epochs: float = _spec(10.0, low=0.0)
    weight_decay: float = _spec(1.5e-6, low=0.0)
    momentum: float = _spec(0.9, low=0.0, high=1.0)
    trust_coefficient: float = _spec(1e-3, low=0.0, open_low=True)


@dataclass
class TrainConfig:
    """batch_size is the global batch: tf.distribute splits it evenly across replicas."""

    epochs: int = _spec(100, low=1)
    batch_size: int = _spec(256, low=2)
    steps_per_epoch: int | None = _spec(None, low=1)
    seed: int = _spec(0, low=0)
    accumulation_steps: int = _spec(1, low=1)
    precision: str = _spec("float32", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    jit_compile: bool = False
    distribution: str = _spec("none", choices=DISTRIBUTIONS)
    checkpoint_every_steps: int | None = _spec(None, low=1)
    keep_checkpoints: int = _spec(2, low=1)
    collapse_threshold: float = _spec(0.05, low=0.0)
    collapse_patience: int = _spec(3, low=1)
    deterministic: bool = False
    verbose: int = _spec(1, low=0, high=2)
    # A wall-clock limit (15m, 90s, 1h30m): the run sets its own length (training/budget.py).
    time_budget: str | None = None

    def __post_init__(self):
        if self.time_budget is None:
            return
        try:
            parse_duration(self.time_budget)
        except ValueError:
            raise UsageError(
                f"train.time_budget: expected a duration such as 15m, 90s or 1h30m, "
                f"got {_quote(self.time_budget)}"
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
    knn_every_epochs: int = _spec(0, low=0)
    knn_k: int = _spec(200, low=1)
    knn_temperature: float = _spec(0.1, low=0.0, open_low=True)
    knn_max_train: int | None = _spec(None, low=1)
    final_linear_probe: bool = False
    # `byol-keras evaluate`: fitted on train_split of the labelled source, tested on data.val_split.
    train_split: str = "train"
    max_train: int | None = _spec(None, low=1)  # seeded random subset of train_split
    batch_size: int = _spec(256, low=1)
    linear_l2: float | None = _spec(None, low=0.0)  # null: chosen on a held-out 10%
    linear_max_iter: int = _spec(500, low=1)
    finetune_epochs: int = _spec(20, low=1)
    finetune_lr: float = _spec(0.05, low=0.0, open_low=True)
    # The evaluation transform (augment/eval_transform.py) of every protocol but segment,
    # of `embed` and of the exported models: resize the short side, then a central square
    # of crop_ratio × the short side; or squash the whole image (aspect lost).
    resize: str = _spec("center_crop", choices=("center_crop", "squash"))
    crop_ratio: float = _spec(1.0, low=0.0, high=1.0, open_low=True)


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

    num_classes: int = _spec(11, low=1, high=255)
    ignore_index: int | None = _spec(11, low=0, high=255)
    class_names: str | None = None
    image_size: list[int] = _spec([120, 160], low=8, high=4096)
    crop_size: list[int] | None = _spec(None, low=8, high=4096)
    scale_range: list[float] = _spec([0.75, 1.5], low=0.0, open_low=True, ordered=True)
    jitter: float = _spec(0.2, low=0.0, high=1.0)
    epochs: int = _spec(30, low=1)
    batch_size: int = _spec(8, low=1)
    lr: float = _spec(1e-3, low=0.0, open_low=True)
    weight_decay: float = _spec(1e-4, low=0.0)
    decoder_channels: int = _spec(64, low=1)
    freeze_backbone: bool = False
    precise_bn_batches: int = _spec(10, low=0)
    seed: int | None = _spec(None, low=0)

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
    precise_bn_batches: training batches over which BatchNorm statistics are
    re-estimated before each val score (0: the moving averages as trained);
    each costs a forward pass of the backbone alone, about 6% of a training step.
    seed (null: train.seed) seeds the label subset, the heads' initial weights
    and the augmentation; a set seed gets its own result file (`-seed<N>`).
    """

    image_size: list[int] = _spec([256, 320], low=32, high=4096)
    epochs: int = _spec(20, low=1)
    batch_size: int = _spec(8, low=1)
    lr: float = _spec(3e-4, low=0.0, open_low=True)
    weight_decay: float = _spec(1e-4, low=0.0)
    anchor_sizes: list[float] = _spec([16.0, 32.0, 64.0, 128.0, 256.0], low=1.0, length=5)
    scale_range: list[float] = _spec([0.75, 1.25], low=0.0, open_low=True, ordered=True)
    freeze_backbone: bool = False
    score_threshold: float = _spec(0.05, low=0.0, high=1.0)
    max_detections: int = _spec(100, low=1)
    head_width: int = _spec(64, low=1)
    head_init: str = _spec("orthogonal", choices=("orthogonal", "normal"))
    precise_bn_batches: int = _spec(20, low=0)
    seed: int | None = _spec(None, low=0)

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
            first_line = _shorten(str(error).splitlines()[0])
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
            raise UsageError(f"{section.name}: expected a mapping of keys, got {_quote(values)}")
        sections[section.name] = _build_section(section.name, section.default_factory, values)
    unknown = sorted(set(raw) - set(sections), key=str)
    if unknown:
        raise UsageError(
            f"{_shorten(str(unknown[0]))}: unknown config section (known: {', '.join(sections)})"
        )
    return Config(**sections)


def _build_section(name: str, section_type: type, values: dict):
    hints = typing.get_type_hints(section_type)
    known = {f.name: f for f in dataclasses.fields(section_type)}
    for key in values:
        if key not in known:
            raise UsageError(
                f"{_shorten(f'{name}.{key}')}: unknown key (known: {', '.join(known)})"
            )
    checked = {}
    for key, value in values.items():
        checked[key] = _check_value(f"{name}.{key}", value, hints[key], known[key].metadata)
    return section_type(**checked)


def _check_value(key: str, value, hint, metadata):
    allowed = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise UsageError(f"{key}: must be set (got null)")
    target = next(t for t in allowed if t is not type(None))
    value = _coerce(key, value, target)
    if isinstance(value, list):
        for item in value:
            _check_range(key, item, metadata)
        length = metadata.get("length", 2)
        if len(value) != length:
            expected = "a pair [a, b]" if length == 2 else f"a list of {length}"
            raise UsageError(f"{key}: expected {expected}, got {_quote(value)}")
        if metadata.get("ordered") and value[0] > value[1]:
            raise UsageError(f"{key}: expected [low, high] with low <= high, got {_quote(value)}")
    else:
        _check_range(key, value, metadata)
    return value


def _coerce(key: str, value, target):
    origin = typing.get_origin(target)
    if origin is list:
        (item_type,) = typing.get_args(target)
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key}: expected a list, got {_quote(value)}")
        return [_coerce(key, item, item_type) for item in value]
    if target is bool:
        if isinstance(value, bool):
            return value
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif target is float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UsageError(f"{key}: must be a finite number, got {_quote(value)}")
            return float(value)
    elif target is str and isinstance(value, str):
        return value
    raise UsageError(f"{key}: expected {target.__name__}, got {_quote(value)}")


def _quote(value) -> str:
    """A short repr for error messages: a nested YAML alias bomb expands to megabytes."""
    return _shorten(_REPR.repr(value))


def _shorten(text: str) -> str:
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _check_range(key: str, value, metadata) -> None:
    low, high, choices = metadata.get("low"), metadata.get("high"), metadata.get("choices")
    if choices is not None and value not in choices:
        raise UsageError(f"{key}: must be one of {', '.join(choices)}; got {_quote(value)}")
    if low is not None and (value < low or (metadata.get("open_low") and value == low)):
        bound = f"> {low}" if metadata.get("open_low") else f">= {low}"
        raise UsageError(f"{key}: must be {bound}, got {_quote(value)}")
    if high is not None and value > high:
        raise UsageError(f"{key}: must be <= {high}, got {_quote(value)}")


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _apply_override(raw: dict, override: str) -> None:
    key, separator, text = override.partition("=")
    if not separator or "." not in key:
        raise UsageError(
            f"--set {_quote(override)}: expected SECTION.KEY=VALUE, e.g. train.epochs=3"
        )
    section, name = key.strip().split(".", 1)
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        value = text
    target = raw.setdefault(section, {})
    if not isinstance(target, dict):
        raise UsageError(f"{section}: expected a mapping of keys, got {_quote(target)}")
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
