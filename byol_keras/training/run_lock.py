"""One `train` process per run directory: a lock file made with O_EXCL, stale-lock aware.

`this_process` and `holder_gone` also tell an export's staging folder left by a killed
export from one in use (`export/publish.py`).
"""

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from byol_keras.errors import UsageError
from byol_keras.runs import check_writable

log = logging.getLogger(__name__)

# A holder writes its record right after creating the file. A lock without a record younger
# than _NEW_LOCK_SECONDS is one being taken; a contender waits up to _WRITE_WAIT_SECONDS for it.
_NEW_LOCK_SECONDS = 10.0
_WRITE_WAIT_SECONDS = 1.0


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[Path]:
    """Holds the lock file `path` (`<run>/.lock`) while the block runs, on every exit path.

    The file records pid, host and process start time. A second process
    gets `UsageError`. A lock left by a process that no longer runs on this
    host (killed with SIGKILL, say) is taken over with a log line, by one
    contender only; one from another host cannot be checked, so the message
    says how to remove it.

    ```python
    with run_lock("runs/quickstart/.lock"):
        ...  # train
    ```
    """
    path = Path(path)
    check_writable(path.parent, "--output")
    mine = this_process()
    # A stale lock is removed, then created again; a contender that was quicker wins.
    for _ in range(3):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _remove_if_stale(path, mine)
            continue
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(mine, stream)
        except BaseException:  # a full disk, say: leave no lock without a holder record
            path.unlink(missing_ok=True)
            raise
        break
    else:
        raise UsageError(f"--output: could not take the lock {path}; another process took it")
    try:
        yield path
    finally:
        # Never remove a lock that another process took over meanwhile.
        if read_holder(path) == mine:
            path.unlink(missing_ok=True)


def _remove_if_stale(path: Path, mine: dict) -> None:
    """Removes the lock file `path` if its holder no longer runs; raises `UsageError` if it does.

    Two processes that both find a stale lock must not both remove "it": the
    slower one would remove the lock the quicker one has just made. So the
    check and the removal happen under `flock` on the stale file itself, and
    the file is removed only if `path` still names the very file locked and
    read. The kernel drops an flock when its process dies, so the guard itself
    can never go stale.

    ```python
    _remove_if_stale(Path("runs/quickstart/.lock"), this_process())
    ```
    """
    if path.is_symlink():  # O_EXCL refuses even a dangling link; this lock never makes one
        raise UsageError(
            f"--output: the lock {path} is a symbolic link to '{os.readlink(path)}', not a lock "
            "file; delete the link"
        )
    try:
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # released meanwhile: try to create it again
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            raise UsageError(
                f"--output: cannot check the lock {path} ({error.strerror}); if no "
                "`byol-keras train` runs on this directory, delete it"
            ) from error
        if not _names(path, handle):
            return  # removed, or replaced by a newer lock, while this process waited
        holder = _written_holder(path, handle)
        if not _names(path, handle):
            return  # released while this process read it
        _check_stale(path, mine, holder)
        path.unlink()
    finally:
        os.close(handle)  # releases the flock


def _names(path: Path, handle: int) -> bool:
    """Whether `path` still names the file open as `handle`."""
    try:
        current = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle)
    return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


def _written_holder(path: Path, handle: int) -> dict | None:
    """The record in the lock open as `handle`, waiting a moment for one not written yet.

    Between its O_EXCL create and its write, a holder's lock file is empty: a
    young lock without a record is one being taken, not a stale one.
    """
    deadline = time.monotonic() + _WRITE_WAIT_SECONDS
    while True:
        holder = _parse(os.pread(handle, 1 << 16, 0))
        status = os.fstat(handle)
        being_taken = status.st_nlink > 0 and time.time() - status.st_mtime < _NEW_LOCK_SECONDS
        if holder is not None or not being_taken:
            return holder
        if time.monotonic() > deadline:
            raise UsageError(
                f"--output: '{path.parent}' is being taken by another process (its lock {path} "
                "has no holder record yet); try again in a moment"
            )
        time.sleep(0.02)


def _check_stale(path: Path, mine: dict, holder: dict | None) -> None:
    """Raises `UsageError` unless `holder` is a process of this host that no longer runs."""
    if holder is None:
        raise UsageError(
            f"--output: {path} is empty or unreadable (no holder record); if no "
            "`byol-keras train` runs on this directory, delete it"
        )
    who = f"pid {holder.get('pid')} on {holder.get('host')}"
    if holder.get("host") != mine["host"]:
        raise UsageError(
            f"--output: '{path.parent}' is locked by {who}; if that process is gone, delete {path}"
        )
    if _alive(holder):
        raise UsageError(f"--output: '{path.parent}' is in use by another training run ({who})")
    log.warning("taking over the stale lock %s of %s, which no longer runs", path, who)


def this_process() -> dict:
    """The record that names this process: pid, host and start time."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid)}


def holder_gone(holder: dict | None) -> bool:
    """Whether `holder`, a record of `this_process`, names a process of this host that has ended.

    False for an unreadable record and for another host's process, which cannot be checked.
    """
    return holder is not None and holder.get("host") == socket.gethostname() and not _alive(holder)


def read_holder(path: Path) -> dict | None:
    """The record written to `path` by `this_process`, or None when it is missing or unreadable."""
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _parse(record: bytes) -> dict | None:
    try:
        holder = json.loads(record)
    except ValueError:  # UnicodeDecodeError included
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _alive(holder: dict) -> bool:
    pid = holder["pid"]
    if pid == os.getpid():
        return False  # this process does not hold it: a previous one with the same pid did
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    # A recycled pid (a restarted container numbers from 1 again) is another process.
    started = _start_time(pid)
    return started is None or holder.get("started") in (None, started)


def _start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count after its ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])
