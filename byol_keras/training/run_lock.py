"""One `train` process per run directory: a lock file made with O_EXCL, stale-lock aware."""

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from byol_keras.errors import UsageError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[Path]:
    """Holds the lock file `path` (`<run>/.lock`) while the block runs, on every exit path.

    The file records pid, host and process start time. A second process
    gets `UsageError`. A lock left by a process that no longer runs on this
    host (killed with SIGKILL, say) is taken over with a log line; one from
    another host cannot be checked, so the message says how to remove it.

    ```python
    with run_lock("runs/quickstart/.lock"):
        ...  # train
    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = _this_process()
    for _ in range(2):  # a stale lock is removed once, then created again
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _remove_if_stale(path, mine)
            continue
        with os.fdopen(handle, "w") as stream:
            json.dump(mine, stream)
        break
    else:
        raise UsageError(f"--output: could not take the lock {path}; another process took it")
    try:
        yield path
    finally:
        # Never remove a lock that another process took over meanwhile.
        if _read(path) == mine:
            path.unlink(missing_ok=True)


def _remove_if_stale(path: Path, mine: dict) -> None:
    holder = _read(path)
    if holder is None:
        raise UsageError(
            f"--output: {path} exists but is unreadable; if no `byol-keras train` runs on "
            "this directory, delete it"
        )
    who = f"pid {holder.get('pid')} on {holder.get('host')}"
    if holder.get("host") != mine["host"]:
        raise UsageError(
            f"--output: '{path.parent}' is locked by {who}; if that process is gone, delete {path}"
        )
    if _alive(holder):
        raise UsageError(f"--output: '{path.parent}' is in use by another training run ({who})")
    log.warning("taking over the stale lock %s of %s, which no longer runs", path, who)
    path.unlink(missing_ok=True)


def _this_process() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid)}


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
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
