"""benchmarks/: the JSON record of harness.py, and one-line refusals when ../shared is missing."""

import datetime
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
PEER_SCRIPTS = {
    "speed/speed_vs_lightly.sh": [],
    "quality/quality_vs_lightly.sh": [],
    "quality/quality_variations.sh": ["1", "0", "OUT", "default"],
}


def _harness():
    spec = importlib.util.spec_from_file_location("harness", BENCHMARKS / "harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script: str, arguments: list[str], tmp_path: Path, **environment: str):
    # OUT stands for the script's output folder, which must not be made before the check.
    arguments = [str(tmp_path / "out") if a == "OUT" else a for a in arguments]
    return subprocess.run(
        ["bash", str(BENCHMARKS / script), *arguments],
        cwd=tmp_path,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("script", PEER_SCRIPTS)
def test_a_peer_benchmark_without_shared_bench_stops_with_one_line(tmp_path, script):
    empty = tmp_path / "no-shared"
    empty.mkdir()
    done = _run(script, PEER_SCRIPTS[script], tmp_path, SHARED_DIR=str(empty))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"{Path(script).name}: needs {empty}/bench/lightly_env.sh "
        "(the lightly replica, ../shared/bench); not found\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-shared"]  # nothing ran


@pytest.mark.parametrize("script", PEER_SCRIPTS)
def test_a_peer_benchmark_names_the_missing_replica_file_then_the_missing_data(tmp_path, script):
    shared = tmp_path / "shared"
    (shared / "bench").mkdir(parents=True)
    # A replica environment that would leave a trace if it were sourced before the checks.
    (shared / "bench" / "lightly_env.sh").write_text(f"touch {tmp_path}/sourced\n")
    done = _run(script, PEER_SCRIPTS[script], tmp_path, SHARED_DIR=str(shared))
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert f"needs {shared}/bench/lightly_cifar_knn.py " in done.stderr

    (shared / "bench" / "lightly_cifar_knn.py").write_text("")
    no_cifar = tmp_path / "no-cifar"
    done = _run(script, PEER_SCRIPTS[script], tmp_path, SHARED_DIR=str(shared), CIFAR_DIR=no_cifar)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert f"needs {shared}/data/cifar10-jpeg.tar.gz " in done.stderr
    assert not (tmp_path / "sourced").exists() and not no_cifar.exists()


@pytest.mark.parametrize(
    ("which", "missing"), [("mnist", "mnist.npz"), ("cifar10", "cifar10-jpeg.tar.gz")]
)
def test_accuracy_without_its_data_stops_with_one_line(tmp_path, which, missing):
    empty = tmp_path / "no-data"
    empty.mkdir()
    done = _run(
        "quality/accuracy.sh", [which, str(empty)], tmp_path, CIFAR_DIR=str(tmp_path / "none")
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"accuracy.sh: needs {empty}/{missing} ")
    assert done.stderr.count("\n") == 1


def test_a_record_holds_the_command_machine_load_date_code_and_figures(tmp_path, monkeypatch):
    harness = _harness()
    monkeypatch.setattr(sys, "argv", ["benchmarks/speed/bench_x.py", "--steps", "3"])
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    run = harness.Record("bench_x", tmp_path / "records" / "x.json")
    path = run.write(img_per_s=[1.5, 2.5], ratio=0.6)
    record = json.loads(path.read_text())

    assert path == tmp_path / "records" / "x.json"
    assert record["name"] == "bench_x"
    assert record["command"] == f"{Path(sys.executable).name} benchmarks/speed/bench_x.py --steps 3"
    assert record["figures"] == {"img_per_s": [1.5, 2.5], "ratio": 0.6}
    date = datetime.datetime.fromisoformat(record["date_utc"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert before <= date <= datetime.datetime.now(datetime.UTC)
    assert set(record["load_average"]) == {"before", "after"}
    assert all(len(v) == 3 and min(v) >= 0 for v in record["load_average"].values())
    assert record["seconds"] >= 0

    machine = record["machine"]
    assert machine["cores"] == os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # checked against the kernel's own listing
        lines = cpuinfo.read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags")).split(":")[1].split()
        assert machine["flags"] == [f for f in harness.SPEED_FLAGS if f in flags]
        model = next(line for line in lines if line.startswith("model name"))
        assert machine["cpu"] == model.split(":", 1)[1].strip()
        total_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024
        assert machine["memory_gib"] == pytest.approx(total_kib / 2**20, abs=0.2)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert record["git"]["commit"] == (head or None)
    assert record["libraries"]["numpy"] == np.__version__


def test_the_command_line_entry_stores_numbers_as_numbers(tmp_path, capsys):
    harness = _harness()
    path = tmp_path / "sh.json"
    arguments = ["peer", "--figure", "round1.img_per_s=302.9", "--figure", "note=idle"]
    assert harness.main([*arguments, "--command", "bench.sh 300 2", "--record", str(path)]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    record = json.loads(path.read_text())
    assert record["figures"] == {"round1.img_per_s": 302.9, "note": "idle"}
    assert record["command"] == "bench.sh 300 2"
    with pytest.raises(SystemExit) as refused:
        harness.main(["peer", "--figure", "no-equals-sign"])
    assert refused.value.code == 2
    assert "expected KEY=VALUE, got 'no-equals-sign'" in capsys.readouterr().err
