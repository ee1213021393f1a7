"""Test helpers: run a command on a read-only or a small, full file system, as users' disks are.

Each command runs in its own mount namespace (`unshare`), where `folder` is
bound read-only, or replaced by a tmpfs of a few KiB, for that command
alone. This needs root or unprivileged user namespaces; elsewhere the tests
that use it are skipped with the reason. Root ignores permission bits, so a
`chmod` would not make a folder read-only for it.

```python
result = run_read_only(run_dir, ["python", "-m", "byol_keras", "export", "--run", run_dir])
result = run_on_small_disk(folder, 256, ["python", "-m", "byol_keras", "train", ...])
```
"""

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# The namespace's shell binds or mounts "$0" and then runs the command, "$@".
_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
_SMALL_DISK = (
    'mount -t tmpfs -o "size=$1k" tmpfs "$0" && shift && "$@"; code=$?; {copy}; exit $code'
)


def run_read_only(folder: Path, command: list[str], env: dict | None = None):
    """Runs `command` with `folder` read-only (EROFS) for it; returns the CompletedProcess."""
    return _in_namespace(_READ_ONLY, [str(folder), *command], env)


def run_on_small_disk(
    folder: Path, size_kib: int, command: list[str], keep: Path, env: dict | None = None
):
    """Runs `command` with an empty tmpfs of `size_kib` KiB at `folder`, then copies it to `keep`.

    The tmpfs goes with the namespace; `keep` holds what the command left on it.
    """
    script = _SMALL_DISK.format(copy=f'cp -a "$0" "{keep}"')
    return _in_namespace(script, [str(folder), str(size_kib), *command], env)


def _in_namespace(script: str, arguments: list[str], env: dict | None):
    unshare = _unshare()
    if unshare is None:
        pytest.skip("needs a mount namespace (root or user namespaces) for a read-only/full disk")
    return subprocess.run(
        [*unshare, "sh", "-c", script, *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@functools.cache
def _unshare() -> list[str] | None:
    """The `unshare` command that gives a mount namespace where mounting works, or None."""
    if shutil.which("unshare") is None:
        return None
    command = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-r", "--mount"]
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            [*command, "sh", "-c", 'mount -t tmpfs -o size=4k tmpfs "$0"', folder],
            capture_output=True,
        )
    return command if probe.returncode == 0 else None
