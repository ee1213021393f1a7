"""The run directory's write helpers: the up-front writability check and atomic writes."""

import errno
import os

import pytest

from byol_keras.errors import UsageError
from byol_keras.runs import atomic_write_text, check_writable


def test_a_folder_that_cannot_be_written_is_refused_naming_the_option(tmp_path):
    # Root ignores permission bits, so the refusals here come from a regular file in the way.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError) as refused:
        check_writable(blocker / "run", "--output")
    assert str(refused.value) == f"--output: cannot write to '{blocker / 'run'}' (Not a directory)"
    with pytest.raises(UsageError, match=f"--run: '{blocker}' exists and is not a directory"):
        check_writable(blocker, "--run")
    made = check_writable(tmp_path / "a" / "b", "--output")
    assert made.is_dir() and list(made.iterdir()) == []  # its probe file is gone


def test_a_refused_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    """A full disk surfaces in write() or fsync(), whose OSError names no file.

    Simulated by making fsync, the last low-level call, raise ENOSPC as it does.
    """
    path = tmp_path / "summary.json"
    path.write_text("old")

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("byol_keras.runs.os.fsync", full_disk)
    with pytest.raises(OSError) as refused:
        atomic_write_text(path, "new")
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(path)
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]
