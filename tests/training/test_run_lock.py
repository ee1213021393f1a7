"""The run lock's messages for a lock being taken, a lock left empty, and a lock that is a link."""

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from byol_keras.errors import UsageError
from byol_keras.training.run_lock import run_lock

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")


def live_holder() -> dict:
    """The record of a process that runs, and is not this one: the test's parent."""
    parent = os.getppid()
    started = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return {"pid": parent, "host": socket.gethostname(), "started": started}


def test_a_lock_whose_holder_writes_its_record_late_is_reported_in_use(tmp_path):
    # The holder has made the file (O_EXCL) but not yet written who it is.
    lock, holder = tmp_path / ".lock", live_holder()
    lock.touch()
    writer = threading.Timer(0.3, lambda: lock.write_text(json.dumps(holder)))
    writer.start()
    try:
        with pytest.raises(UsageError) as refused, run_lock(lock):
            pass
    finally:
        writer.join()
    assert str(refused.value) == (
        f"--output: '{tmp_path}' is in use by another training run "
        f"(pid {holder['pid']} on {holder['host']})"
    )
    assert json.loads(lock.read_text()) == holder


def test_a_young_empty_lock_is_being_taken_and_an_old_one_may_be_deleted(tmp_path):
    lock = tmp_path / ".lock"
    lock.touch()
    with pytest.raises(UsageError) as refused, run_lock(lock):
        pass
    message = str(refused.value)
    assert "being taken by another process" in message and str(lock) in message
    assert "delete" not in message  # never invite the deletion of a live lock
    assert lock.exists() and lock.read_text() == ""

    hour_ago = time.time() - 3600
    os.utime(lock, (hour_ago, hour_ago))
    with pytest.raises(UsageError, match=f"{lock} is empty .*delete it"), run_lock(lock):
        pass
    assert lock.exists()


@pytest.mark.parametrize("target", ["missing", "present"])
def test_a_lock_that_is_a_symbolic_link_is_named_as_one(tmp_path, target):
    lock = tmp_path / ".lock"
    if target == "present":
        (tmp_path / target).write_text(json.dumps(live_holder()))
    lock.symlink_to(tmp_path / target)
    with pytest.raises(UsageError) as refused, run_lock(lock):
        pass
    assert str(refused.value).startswith(
        f"--output: the lock {lock} is a symbolic link to '{tmp_path / target}'"
    )
    assert "another process took it" not in str(refused.value)
    assert lock.is_symlink()  # left as found


def test_a_run_directory_that_cannot_be_written_is_refused_before_the_lock(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    run = tmp_path / "file" / "run"
    with (
        pytest.raises(UsageError, match=f"--output: cannot write to '{run}'"),
        run_lock(run / ".lock"),
    ):
        pass


def test_a_lock_whose_record_cannot_be_written_is_removed(tmp_path, monkeypatch):
    """A full disk refuses the record after the file is made; simulated in json.dump."""

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full_disk)
    with pytest.raises(OSError, match="No space left"), run_lock(tmp_path / ".lock"):
        pass
    assert not (tmp_path / ".lock").exists()  # else every later run would find it empty
