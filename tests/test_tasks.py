"""The one table of downstream tasks: it covers every config section that training does not
read, every task folder holds what its row promises, and the command line offers each row."""

import dataclasses
import importlib

import pytest

from byol_keras import cli, tasks
from byol_keras.config import Config
from byol_keras.tasks import Task, dense_tasks, task_sections
from byol_keras.transfer.protocol import DenseProtocol

# What training reads, listed by hand: every other section is a downstream task's.
TRAINING_SECTIONS = {"data", "augment", "model", "optimizer", "train"}


def test_every_config_section_beyond_training_belongs_to_a_task():
    sections = {field.name for field in dataclasses.fields(Config)}
    assert set(task_sections()) == sections - TRAINING_SECTIONS


def test_every_dense_task_folder_holds_what_its_row_promises():
    for task in dense_tasks():
        protocol = task.module("protocol").PROTOCOL
        assert isinstance(protocol, DenseProtocol)
        assert protocol.name == task.protocol == task.section
        assert callable(task.module("pictures").picture)
        assert callable(task.module("export").export_model)
        assert importlib.import_module(task.model_module).__name__.endswith(".model")


def choices(parser, command: str) -> dict:
    """`--option: choices` (None for a free value) of one command of the parser."""
    (commands,) = [action for action in parser._actions if action.dest == "command"]
    return {
        action.option_strings[0]: action.choices
        for action in commands.choices[command]._actions
        if action.option_strings
    }


def test_the_command_line_offers_the_tasks_of_the_table():
    parser = cli.build_parser()
    evaluate, visualize, export = (choices(parser, c) for c in ("evaluate", "visualize", "export"))
    assert evaluate["--protocol"] == (
        "linear", "knn", "finetune", "retrieval", "segment", "detect"
    )  # fmt: skip
    assert visualize["--kind"] == (
        "tsne", "retrieval", "occlusion", "curves", "label-efficiency", "segmentation", "detection"
    )  # fmt: skip
    assert export["--model"] == ("backbone", "segmenter", "detector")
    for options in (visualize, export):
        assert options["--segmenter"] is None and options["--detector"] is None


@pytest.fixture
def keypoints_row(monkeypatch):
    """A sixth row, as a new task would add it (its folder is not needed to build the CLI)."""
    row = Task("keypoints", "keypoints", True, "keypoints", "keypointer", "keypoints")
    monkeypatch.setitem(tasks.TASKS, row.protocol, row)
    return row


def test_a_new_row_is_all_the_command_line_needs(keypoints_row):
    parser = cli.build_parser()
    assert "keypoints" in choices(parser, "evaluate")["--protocol"]
    assert "keypoints" in choices(parser, "visualize")["--kind"]
    assert "keypointer" in choices(parser, "export")["--model"]
    args = parser.parse_args(
        ["visualize", "--run", "r", "--kind", "keypoints", "--keypointer", "k"]
    )
    assert cli._chosen_results(args) == {"segmenter": None, "detector": None, "keypointer": "k"}
    args = parser.parse_args(["export", "--run", "r", "--model", "keypointer", "--keypointer", "k"])
    assert cli._chosen_results(args)["keypointer"] == "k"
    assert keypoints_row.model_module == "byol_keras.transfer.keypoints.model"
