from pathlib import Path

import pytest

from byol_keras.cli import QUICKSTART, main
from byol_keras.config import Config, from_dict, load_config, save_config
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
