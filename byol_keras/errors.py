"""Every exception type of byol-keras; the CLI turns each into a one-line message and an exit code.

Plain Python, importing only the standard library: the export verification worker uses it
without Keras.
"""

import errno
import os
import re

# What a disk answers to a write it refuses: read-only, full, over quota, file too large.
_WRITE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_WRITE_REASONS = "|".join(re.escape(os.strerror(code)) for code in _WRITE_ERRNOS)
# TensorFlow's file writers raise their own errors (ResourceExhaustedError for a full disk):
# "{{function_node ...}} <path>; No space left on device [Op:SaveV2]".
_TENSORFLOW_WRITE = re.compile(rf"(?:\{{\{{.*?\}}\}}\s*)?(.+); ({_WRITE_REASONS})(?: \[Op:\w+\])?")


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none.

    ```python
    error = OSError("cannot identify image file\\nmore detail")
    assert first_line(error) == "cannot identify image file"
    ```
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def write_failure(error: BaseException, folder: str | None = None) -> str | None:
    """One line naming the path when `error` is a disk refusing a write, else None.

    A read-only or full disk, from Python's `OSError` or TensorFlow's file
    writers. A failed `write()` names no file; `folder`, the command's output,
    is named then.

    ```python
    error = OSError(errno.ENOSPC, "No space left on device")
    assert write_failure(error, "runs/a") == "cannot write to 'runs/a': No space left on device"
    ```
    """
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
        path, reason = error.filename, error.strerror
    elif match := _TENSORFLOW_WRITE.fullmatch(first_line(error)):
        path, reason = match.groups()
    else:
        return None
    if path is not None:
        return f"cannot write '{os.fsdecode(path)}': {reason}"
    return f"cannot write to '{folder}': {reason}" if folder else f"cannot write: {reason}"


class UsageError(ValueError):
    """Bad input from the user: a config key, a data source, a path or a flag.

    The message is one line that names the problem; the CLI prints it as
    `byol-keras: error: <message>` and exits with code 2.

    ```python
    # doctest: raises UsageError
    raise UsageError("data.source: folder 'imgs/' does not exist")
    ```
    """


class TrainingDiverged(RuntimeError):
    """Training produced a loss or weights that are not finite (NaN or Inf).

    Not the user's mistake in a flag, so the CLI prints the one-line message
    as `byol-keras: error: <message>` and exits with code 1. The latest
    checkpoint is still the last good one; lowering the learning rate and
    rerunning with `--resume-with-changes` resumes from it.

    ```python
    # doctest: raises TrainingDiverged
    raise TrainingDiverged("loss is nan at step 120; latest good checkpoint: step 100")
    ```
    """


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint at `step`.

    The CLI prints one line and exits with 128 + the signal number (130 for
    Ctrl-C, 143 for SIGTERM), as a shell does for a process killed by it.

    ```python
    # doctest: raises TrainingInterrupted
    import signal

    raise TrainingInterrupted(signal.SIGTERM, step=57)
    ```
    """

    def __init__(self, signum: int, step: int):
        super().__init__(
            f"interrupted at step {step}; checkpoint saved, rerun the same command to resume"
        )
        self.signum = int(signum)
        self.step = step


class ExportError(RuntimeError):
    """An export that could not produce a verified artifact; the CLI exits with code 1.

    ```python
    # doctest: raises ExportError
    raise ExportError("tf2onnx failed: Unsupported ops: ...")
    ```
    """


class ExportVerificationError(ExportError):
    """A reloaded artifact differs from the Keras model beyond the tolerance or breaks the contract.

    ```python
    # doctest: raises ExportVerificationError
    raise ExportVerificationError("onnx/random: embeddings differ by 0.3 > tolerance 1.1e-4")
    ```
    """
