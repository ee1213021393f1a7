"""benchmarks/quality/study.py on a smoke grid: tables, figure, shared cells once, reruns skip."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.image_size=8",
    "model.width=4",
    "model.projection_dim=8",
    "model.projector_hidden_dim=16",
    "model.predictor_hidden_dim=16",
    "optimizer.warmup_epochs=0",
    "train.batch_size=32",
]


def _study():
    path = ROOT / "benchmarks" / "quality" / "study.py"
    spec = importlib.util.spec_from_file_location("study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arguments(output: Path) -> list[str]:
    # Full BYOL, SimCLR and the random init from the ablations; "full" from the augmentations
    # is full BYOL and SimCLR again, which must not train again.
    return [
        "--config", str(ROOT / "byol_keras" / "quickstart.yaml"),
        "--epochs", "1", "--steps-per-epoch", "2", "--noise-seeds",
        "--only", "ablations", "augment",
        "--cells", "full BYOL", "SimCLR", "random init", "full",
        "--set", *TINY,
        "--output", str(output),
        "--record", str(output / "record.json"),
    ]  # fmt: skip


def test_bad_overrides_are_refused_before_anything_runs(tmp_path, capsys):
    study = _study()
    output = tmp_path / "study"
    assert study.main([*_arguments(output), "--set", "model.method=moco"]) == 2
    assert capsys.readouterr().err.strip() == (
        "study: error: model.method: must be one of byol, simsiam, simclr; got 'moco'"
    )
    assert not output.exists()


@pytest.mark.slow
def test_smoke_grid_writes_tables_and_figure_and_a_rerun_skips_every_cell(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the cells' processes import this checkout
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    study = _study()
    output = tmp_path / "study"
    assert study.main(_arguments(output)) == 0
    first_log = capsys.readouterr().out

    runs = sorted((output / "cells").glob("*/run"))
    assert len(runs) == 2, first_log  # BYOL and SimCLR, each trained once
    assert first_log.count("same config as an earlier cell") == 2
    report = json.loads((output / "study.json").read_text())
    cells = {(c["section"], c["name"], c["method"]): c for c in report["cells"]}
    assert len(cells) == 5
    for (_, name, _), cell in cells.items():
        assert cell["error"] is None
        run = output / "cells" / cell["key"] / "run"
        knn = "knn-random.json" if name == "random init" else "knn.json"
        assert cell["knn_top1"] == json.loads((run / "eval" / knn).read_text())["top1"]
    simclr = cells[("ablations", "SimCLR", "SimCLR")]
    recorded = yaml.safe_load(
        (output / "cells" / simclr["key"] / "run" / "config.yaml").read_text()
    )
    assert recorded["model"]["method"] == "simclr" and recorded["train"]["steps_per_epoch"] == 2
    summary = json.loads((output / "cells" / simclr["key"] / "run" / "summary.json").read_text())
    assert simclr["collapse"] == summary["final_collapse"] and summary["final_tau"] is None
    assert cells[("augment", "full", "SimCLR")]["key"] == simclr["key"]

    table = (output / "study.md").read_text()
    byol = cells[("ablations", "full BYOL", "full BYOL")]
    assert f"| full BYOL | {100 * byol['knn_top1']:.2f} |" in table
    random_init = cells[("ablations", "random init", "random init")]
    assert f"| random init | {100 * random_init['knn_top1']:.2f} |" in table
    # Each method's only augmentation row is its best: a drop of 0.
    assert "| full | " in table and "| 0.00 |" in table
    assert (output / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((output / "record.json").read_text())
    assert record["figures"]["tables"] == report["tables"]
    assert record["command"] == report["command"]

    results = sorted((output / "cells").glob("*/*.json"))
    stamps = {path: path.stat().st_mtime_ns for path in results}
    logs = {path: path.read_bytes() for path in (output / "cells").glob("*/*.log")}
    assert study.main(_arguments(output)) == 0
    rerun_log = capsys.readouterr().out
    assert rerun_log.count("done before, skipped") == 3, rerun_log
    assert {path: path.stat().st_mtime_ns for path in results} == stamps
    assert {path: path.read_bytes() for path in logs} == logs  # no process ran again
    assert json.loads((output / "study.json").read_text())["tables"] == report["tables"]
