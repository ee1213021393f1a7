import re
import subprocess
import sys
from pathlib import Path

import pytest

from byol_keras.cli import QUICKSTART, main
from byol_keras.config import Config, from_dict, load_config, parse_duration, save_config
from byol_keras.errors import UsageError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    assert isinstance(load_config(path), Config)


def test_quickstart_is_shipped_in_configs_and_in_the_package():
    assert (Path(__file__).parents[1] / "configs" / "quickstart.yaml").resolve() == QUICKSTART
    assert load_config(QUICKSTART).data.source == "digits"


def test_overrides_are_typed_and_applied(tmp_path):
    config = load_config(
        write(tmp_path, "train:\n  epochs: 5\n"),
        ["train.epochs=3", "augment.blur_prob=[0.5, 0.0]", "data.val_source=null"],
    )
    assert config.train.epochs == 3
    assert config.augment.blur_prob == [0.5, 0.0]
    assert config.augment.overrides() == {"blur_prob": (0.5, 0.0)}
    assert config.optimizer.base_lr == pytest.approx(0.2)


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["model.backbone=resnet50", "train.precision=mixed_bfloat16"])
    save_config(config, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == config


@pytest.mark.parametrize(
    ("text", "overrides", "names"),
    [
        ("train:\n  epochz: 3\n", [], "train.epochz: unknown key"),
        ("trian:\n  epochs: 3\n", [], "trian: unknown config section"),
        ("", ["train.epochs=three"], "train.epochs: expected int"),
        ("", ["train.epochs=0"], "train.epochs: must be >= 1"),
        ("", ["train.jit_compile=1"], "train.jit_compile: expected bool"),
        ("", ["optimizer.base_lr=0"], "optimizer.base_lr: must be > 0"),
        ("", ["model.tau_base=1.5"], "model.tau_base: must be <= 1.0"),
        ("", ["train.precision=fp8"], "train.precision: must be one of"),
        ("", ["augment.solarize_prob=[0.1]"], "augment.solarize_prob: expected a pair"),
        ("", ["augment.blur_prob=[0.5, 2]"], "augment.blur_prob: must be <= 1"),
        ("", ["augment.crop_area=[0.9, 0.2]"], "augment.crop_area: expected [low, high]"),
        ("", ["augment.crop_area=[0, 1]"], "augment.crop_area: must be > 0"),
        ("", ["epochs=3"], "expected SECTION.KEY=VALUE"),
        ("train: [1, 2]\n", [], "train: expected a mapping"),
        ("train: {epochs: 3\n", [], "is not valid YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, overrides, names):
    with pytest.raises(UsageError, match=names.replace("[", r"\[")):
        load_config(write(tmp_path, text), overrides)


def test_missing_config_file():
    with pytest.raises(UsageError, match="does not exist"):
        load_config("no/such/config.yaml")


def test_from_dict_defaults():
    assert from_dict({}) == Config()


def test_cli_config_errors_exit_2_with_one_line(tmp_path, capsys):
    path = write(tmp_path, "train:\n  epochs: -1\n")
    assert main(["train", "--config", str(path), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "byol-keras: error: train.epochs: must be >= 1, got -1"
    assert not (tmp_path / "run").exists()


def test_cli_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--no-such-flag"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("text", "overrides", "names"),
    [
        ("", ["optimizer.base_lr=.nan"], "optimizer.base_lr: must be a finite number, got nan"),
        ("", ["optimizer.weight_decay=.inf"], "optimizer.weight_decay: must be a finite number"),
        ("model:\n  tau_base: .nan\n", [], "model.tau_base: must be a finite number, got nan"),
        ("", ["augment.blur_sigma=[0.1, .inf]"], "augment.blur_sigma: must be a finite number"),
        ("", ["optimizer.base_lr=1e999"], "optimizer.base_lr: must be a finite number, got inf"),
        ("", ["optimizer.base_lr=nan"], "optimizer.base_lr: expected float, got 'nan'"),
        ("", ["optimizer.base_lr=fast"], "optimizer.base_lr: expected float, got 'fast'"),
        ("", ["optimizer.base_lr=1e-4x"], "optimizer.base_lr: expected float, got '1e-4x'"),
        ("", ["train.epochs=1e3"], "train.epochs: expected int, got '1e3'"),
        ("", ["data.max_file_mb=0"], "data.max_file_mb: must be > 0.0"),
        ("", ["data.max_image_pixels=0"], "data.max_image_pixels: must be >= 1"),
    ],
)
def test_non_finite_and_non_numeric_values_are_refused(tmp_path, text, overrides, names):
    with pytest.raises(UsageError, match=re.escape(names)):
        load_config(write(tmp_path, text), overrides)


def test_exponent_floats_are_read_as_the_numbers_users_mean(tmp_path):
    path = write(tmp_path, "optimizer:\n  base_lr: 1e-4\n  weight_decay: 5E-7\n")
    config = load_config(
        path, ["optimizer.trust_coefficient=2e-3", "augment.blur_sigma=[1e-1, 2e0]"]
    )
    assert config.optimizer.base_lr == 1e-4 and isinstance(config.optimizer.base_lr, float)
    assert config.optimizer.weight_decay == 5e-7
    assert config.optimizer.trust_coefficient == 2e-3
    assert config.augment.blur_sigma == [0.1, 2.0]
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def _alias_bomb(levels: int = 7) -> str:
    """Billion-laughs YAML: each level lists the previous one 9 times (9**levels strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ntrain:\n  epochs: *l{levels - 1}\n"


def test_a_yaml_alias_bomb_gives_a_short_error_line(tmp_path, capsys):
    bomb = _alias_bomb()
    assert len(bomb) < 500
    path = write(tmp_path, bomb)
    assert main(["train", "--config", str(path), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("byol-keras: error: train.epochs: expected int")
    assert len(error[0]) < 200 and error[0].endswith("...")


def test_deep_nesting_and_long_values_give_short_one_line_errors(tmp_path):
    deep = write(tmp_path, "train:\n  epochs: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(UsageError, match="nested too deeply") as caught:
        load_config(deep)
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="train.epochs: expected int") as caught:
        load_config(None, ["train.epochs=" + "x" * 100_000])
    assert len(str(caught.value)) < 200
    with pytest.raises(UsageError, match="unknown key") as caught:
        load_config(None, ["train." + "y" * 100_000 + "=1"])
    assert len(str(caught.value)) < 400


def test_presets_do_not_cache_more_decoded_images_than_a_machine_holds():
    # ImageNet's 1,281,167 training images decoded at 224 px would take 179 GiB.
    config = load_config(Path(__file__).parents[1] / "configs" / "imagenet_resnet50.yaml")
    assert 1_281_167 * config.data.image_size**2 * 3 / 2**30 > 64
    assert config.data.cache is False


def test_a_void_index_among_the_classes_is_refused():
    # Review defect 6: ignore_index 3 of 11 classes was accepted and scored as a class.
    with pytest.raises(UsageError, match=r"segment\.ignore_index: 3 is one of the 11 classes"):
        from_dict({"segment": {"num_classes": 11, "ignore_index": 3}})
    assert (
        from_dict({"segment": {"num_classes": 11, "ignore_index": 11}}).segment.ignore_index == 11
    )
    assert from_dict({"segment": {"ignore_index": None}}).segment.ignore_index is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900.0), ("90s", 90.0), ("1h30m", 5400.0), ("1.5h", 5400.0), (" 2h 5s ", 7205.0)],
)
def test_a_time_budget_is_read_in_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds
    assert load_config(None, [f"train.time_budget={text}"]).train.time_budget_seconds == seconds
    assert load_config().train.time_budget_seconds is None  # off by default


@pytest.mark.parametrize("value", ["soon", "15", "0m", "-5s", "1m1h", "m", "''"])
def test_a_malformed_time_budget_exits_2_with_one_line_naming_the_key(tmp_path, capsys, value):
    command = ["train", "--output", str(tmp_path / "run"), "--set", f"train.time_budget={value}"]
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("byol-keras: error: train.time_budget: ")
    assert not (tmp_path / "run").exists()


def test_a_time_budget_is_refused_across_workers():
    with pytest.raises(UsageError, match="train.time_budget: not supported with .* multi_worker"):
        load_config(None, ["train.time_budget=15m", "train.distribution=multi_worker"])


def test_the_config_the_catalog_and_the_resume_check_load_without_keras():
    # The command line validates a config before TensorFlow's start-up logging is quieted.
    code = (
        "import sys, byol_keras.config, byol_keras.catalog, byol_keras.training.resume; "
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr
