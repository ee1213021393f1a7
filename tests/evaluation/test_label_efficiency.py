"""The label-efficiency picture plots each arm's seed mean of the task's own score."""

import json

import numpy as np
import pytest

from byol_keras.cli import main
from byol_keras.evaluation.label_efficiency import label_efficiency_figure, label_efficiency_points

VOC, CAMVID = "voc:/data/bccd", "segfolder:/data/camvid"


def _result(eval_dir, name, protocol, backbone, fraction, data, **scores):
    result = {
        "protocol": protocol,
        "backbone": backbone,
        "data": data,
        "parameters": {"label_fraction": fraction, "seed": 1},
        **scores,
    }
    (eval_dir / f"{name}.json").write_text(json.dumps(result))


@pytest.fixture
def eval_dir(tmp_path):
    folder = tmp_path / "run" / "eval"
    folder.mkdir(parents=True)
    _result(folder, "detect-10pct-seed1", "detect", "pretrained", 0.1, VOC, ap50=0.6, ap=0.3)
    _result(folder, "detect-10pct-seed2", "detect", "pretrained", 0.1, VOC, ap50=0.7, ap=0.3)
    _result(folder, "detect-10pct-random-seed1", "detect", "random_init", 0.1, VOC, ap50=0.5)
    _result(folder, "detect-100pct", "detect", "pretrained", 1.0, VOC, ap50=0.8)
    _result(folder, "detect-100pct-random", "detect", "random_init", 1.0, VOC, ap50=0.82)
    _result(folder, "segment-5pct", "segment", "pretrained", 0.05, CAMVID, mean_iou=0.2)
    (folder / "knn.json").write_text(json.dumps({"protocol": "knn", "top1": 0.9}))
    (folder / "notes.json").write_text("{ not json")
    return folder


def test_points_group_each_tasks_score_by_data_arm_and_fraction(eval_dir):
    points = label_efficiency_points(eval_dir)
    assert points == {
        ("detect", VOC): {
            "pretrained": {0.1: [0.6, 0.7], 1.0: [0.8]},
            "random_init": {0.1: [0.5], 1.0: [0.82]},
        },
        ("segment", CAMVID): {"pretrained": {0.05: [0.2]}, "random_init": {}},
    }


def test_each_arms_line_goes_through_its_seed_means(eval_dir):
    figure = label_efficiency_figure(label_efficiency_points(eval_dir))
    detect, segment = figure.axes
    lines = {line.get_label(): line for line in detect.get_lines()}
    np.testing.assert_allclose(lines["BYOL-pretrained"].get_xydata(), [[0.1, 65.0], [1.0, 80.0]])
    np.testing.assert_allclose(lines["random init"].get_xydata(), [[0.1, 50.0], [1.0, 82.0]])
    assert detect.get_ylabel() == "test AP50 (%)" and segment.get_ylabel() == "test mean IoU (%)"
    assert [label.get_text() for label in detect.get_xticklabels()] == ["10%", "100%"]


def test_the_cli_draws_it_from_the_runs_results_or_says_what_to_run(eval_dir, tmp_path, capsys):
    run = eval_dir.parent
    assert main(["visualize", "--run", str(run), "--kind", "label-efficiency"]) == 0
    path = run / "pictures" / "label-efficiency.png"
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty").mkdir()
    assert main(["visualize", "--run", str(tmp_path / "empty"), "--kind", "label-efficiency"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("byol-keras: error: --run:") and "--label-fraction" in error
    assert len(error.strip().splitlines()) == 1
