"""TensorFlow's oneDNN kernels, on by default wherever TensorFlow leaves them off.

TensorFlow 2.21 turns its oneDNN custom operations on by default only on x86
CPUs with AVX-512 VNNI, BF16 or AMX. On the others (an AVX2-only AMD EPYC or
Intel Core, say) they stay off unless `TF_ENABLE_ONEDNN_OPTS=1` is set, and
BYOL trains 1.6 times slower there (benchmarks/RESULTS.md). The variable is
read once, when TensorFlow is imported, so `import byol_keras` sets it before
that happens, unless the user set it, either way:

```python
import byol_keras  # before TensorFlow: TF_ENABLE_ONEDNN_OPTS=1 unless it was set
import tensorflow as tf

byol_keras.onednn.enabled()  # True, unless it was set to 0 or TensorFlow came first
```

`TF_ENABLE_ONEDNN_OPTS=0` turns the kernels off, as it does for TensorFlow itself.
"""

import logging
import os
import platform
import sys

ENV = "TF_ENABLE_ONEDNN_OPTS"
_X86 = ("x86_64", "amd64", "i386", "i686")
_warned = False


def turn_on_unless_set() -> None:
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` when neither the user nor an import of TensorFlow decided."""
    if ENV not in os.environ and "tensorflow" not in sys.modules:
        os.environ[ENV] = "1"


def enabled() -> bool | None:
    """Whether this process's TensorFlow runs its oneDNN kernels (None before TensorFlow loads)."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow that no longer has the query: nothing to tell
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def warn_once_if_off() -> None:
    """Logs one line, once a process, when TensorFlow came first with oneDNN off on an x86 CPU.

    A user who set `TF_ENABLE_ONEDNN_OPTS=0` chose it and is not told again.
    """
    global _warned
    if _warned or os.environ.get(ENV) == "0" or platform.machine().lower() not in _X86:
        return
    _warned = True
    if enabled() is False:
        logging.getLogger("byol_keras").warning(
            "TensorFlow's oneDNN kernels are off (TensorFlow was imported before byol_keras); "
            "set %s=1 before importing TensorFlow to train faster on this CPU",
            ENV,
        )
