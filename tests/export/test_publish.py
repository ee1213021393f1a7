"""Publishing an export: version numbers, names the export root reserves, stale staging folders."""

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from byol_keras.errors import UsageError
from byol_keras.export.publish import check_request, existing_versions, publish
from byol_keras.runs import RunDirectory


def test_only_ascii_digit_folders_and_files_are_versions(tmp_path):
    # str.isdigit and \d accept superscripts and other scripts' digits; TF Serving and int do not.
    model = tmp_path / "byol_backbone"
    for folder in ("1", "3", "²", "١٢", "7a", "assets"):
        (model / folder).mkdir(parents=True)
    (tmp_path / "onnx").mkdir()
    for file in ("byol_backbone-v5.onnx", "byol_backbone-v٣.onnx", "byol_backbone-v²6.onnx"):
        (tmp_path / "onnx" / file).write_bytes(b"")
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "byol_backbone-v８.json").write_text("{}")  # a fullwidth 8
    assert existing_versions(tmp_path, "byol_backbone") == {1, 3, 5}


@pytest.mark.parametrize("name", ["manifest.json", "manifests", "onnx", "Manifest.JSON", "ONNX"])
def test_names_of_the_export_roots_own_entries_are_refused_before_anything_is_written(
    tmp_path, name
):
    # Case-insensitively: on macOS's file system "ONNX" is the onnx/ folder.
    output = tmp_path / "export"
    with pytest.raises(UsageError, match=f"--name: '{name}' is reserved"):
        check_request(("saved_model",), output, name, None, 17)
    assert not output.exists()


def test_a_name_too_long_for_its_files_is_refused(tmp_path):
    # ".staging-<name>-v<version>-XXXXXXXX" must stay within a file name's 255 bytes.
    with pytest.raises(UsageError, match="--name: .* is not a model name"):
        check_request(("saved_model",), tmp_path, "m" * 241, None, 17)
    assert check_request(("saved_model",), tmp_path, "m" * 200, None, 17).version == 1


def test_an_output_that_cannot_be_written_is_refused_before_the_export(tmp_path):
    # Root ignores permission bits; a regular file in the way refuses every write.
    (tmp_path / "file").write_text("not a folder")
    output = tmp_path / "file" / "export"
    with pytest.raises(UsageError, match=f"--output: cannot write to '{output}'"):
        check_request(("saved_model",), output, "byol_backbone", None, 17)


def test_export_root_entries_of_the_wrong_kind_are_refused_up_front(tmp_path):
    # What an export named "manifest.json" left before names were checked: every later
    # export failed after its work, writing the root manifest over that folder.
    (tmp_path / "manifest.json" / "1").mkdir(parents=True)
    with pytest.raises(UsageError, match="manifest.json' is a folder, not a file; move it away"):
        check_request(("saved_model",), tmp_path, "byol_backbone", None, 17)
    (tmp_path / "manifest.json" / "1").rmdir()
    (tmp_path / "manifest.json").rmdir()
    (tmp_path / "byol_backbone").write_text("notes")
    with pytest.raises(UsageError, match="byol_backbone' is a file, not a folder; move it away"):
        check_request(("saved_model",), tmp_path, "byol_backbone", None, 17)


def _staging(output: Path, version: int, owner: dict | None, age_seconds: float = 0) -> Path:
    """A staging folder as an export leaves it when killed after writing its SavedModel."""
    folder = output / f".staging-byol_backbone-v{version}-x{version}"
    (folder / "saved_model").mkdir(parents=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    if owner is not None:
        (folder / "owner.json").write_text(json.dumps(owner))
    then = time.time() - age_seconds
    os.utime(folder, (then, then))
    return folder


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_staging_folders_of_dead_exports_are_swept_and_live_ones_kept(tmp_path, caplog):
    output = tmp_path / "export"
    output.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    parent = os.getppid()  # alive, and not this process
    started = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19])
    here = socket.gethostname()
    dead = _staging(output, 1, {"pid": gone.pid, "host": here, "started": 1})
    recycled = _staging(output, 2, {"pid": parent, "host": here, "started": started - 1})
    live = _staging(output, 3, {"pid": parent, "host": here, "started": started})
    elsewhere = _staging(output, 4, {"pid": gone.pid, "host": f"not-{here}", "started": 1})
    # Without an owner record: left by an older byol-keras, or one about to write it.
    unowned_old = _staging(output, 5, None, age_seconds=2 * 3600)
    unowned_new = _staging(output, 6, None)

    def write_saved_model(path: Path) -> None:
        record = json.loads((path.parent / "owner.json").read_text())
        assert record["pid"] == os.getpid() and record["host"] == here
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"graph")

    request = check_request(("saved_model",), output, "byol_backbone", None, 17)
    run = RunDirectory(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        manifest = publish(request, run, write_saved_model, lambda *_: {"passed": True}, {})
    assert manifest["version"] == 1 and (output / "byol_backbone" / "1" / "saved_model.pb").exists()
    kept = {p.name for p in output.glob(".staging-*")}
    assert kept == {live.name, elsewhere.name, unowned_new.name}
    for swept in (dead, recycled, unowned_old):
        assert f"removed {swept}" in caplog.text
