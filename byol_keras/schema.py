"""The typed settings behind the config and the view recipes: each field's range, and one checker.

A field declares its default and what it accepts with `spec`; `check_value`
turns a value that YAML, `--set` or Python gave into the field's type, or
raises `UsageError` naming the key. `byol_keras.config` checks every section
with it, and `byol_keras.catalog.ViewParams` its augmentation numbers, so each
range is declared once, beside its field.

```python
from dataclasses import dataclass

@dataclass
class Section:
    size: int = spec(32, low=8, high=1024)

assert check_section("section", Section, {"size": 64}).size == 64
```
"""

import dataclasses
import math
import re
import reprlib
import types
import typing
from dataclasses import field
from numbers import Real

from byol_keras.errors import UsageError

# A number as users write it, e.g. 1e-4, which YAML 1.1 leaves a string; not nan or inf.
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_QUOTE_CHARS = 80
# reprlib stops at a few items per level and a few levels, so the repr of a
# value that shares sub-lists a billion times is built in bounded time.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _QUOTE_CHARS


def spec(
    default,
    *,
    low=None,
    high=None,
    choices=None,
    open_low=False,
    ordered=False,
    length=2,
    paired=False,
):
    """A dataclass field with its default and what it accepts.

    Args:
        default: The field's default (a list is copied for each instance).
        low, high: The smallest and largest value, each item of a list alike.
        choices: The values allowed, for a string.
        open_low: Whether `low` itself is refused.
        ordered: Whether a list is a `[low, high]` range rather than a pair of values.
        length: How many items a list holds.
        paired: Whether the config takes the field as `[view1, view2]` (view recipes only).
    """
    metadata = {
        "low": low,
        "high": high,
        "choices": choices,
        "open_low": open_low,
        "ordered": ordered,
        "length": length,
        "paired": paired,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_section(name: str, section_type: type, values: dict):
    """`section_type(**values)` with every value checked; an unknown key raises `UsageError`."""
    hints = typing.get_type_hints(section_type)
    known = {f.name: f for f in dataclasses.fields(section_type)}
    for key in values:
        if key not in known:
            where = shorten(f"{name}.{key}")
            raise UsageError(f"{where}: unknown key (known: {', '.join(known)})")
    checked = {}
    for key, value in values.items():
        checked[key] = check_value(f"{name}.{key}", value, hints[key], known[key].metadata)
    return section_type(**checked)


def check_value(key: str, value, hint, metadata):
    """`value` as the type `hint` names, within `metadata`'s range (see `spec`), or `UsageError`."""
    allowed = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise UsageError(f"{key}: must be set (got null)")
    target = next(t for t in allowed if t is not type(None))
    value = _coerce(key, value, target)
    if isinstance(value, list):
        for item in value:
            _check_range(key, item, metadata)
        length = metadata.get("length", 2)
        if len(value) != length:
            expected = "a pair [a, b]" if length == 2 else f"a list of {length}"
            raise UsageError(f"{key}: expected {expected}, got {quote(value)}")
        if metadata.get("ordered") and value[0] > value[1]:
            raise UsageError(f"{key}: expected [low, high] with low <= high, got {quote(value)}")
    else:
        _check_range(key, value, metadata)
    return value


def _coerce(key: str, value, target):
    origin = typing.get_origin(target)
    if origin in (list, tuple):
        item_type = typing.get_args(target)[0]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise UsageError(f"{key}: expected a list, got {quote(value)}")
        return [_coerce(key, item, item_type) for item in value]
    if target is bool:
        if isinstance(value, bool):
            return value
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif target is float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UsageError(f"{key}: must be a finite number, got {quote(value)}")
            return float(value)
    elif target is str and isinstance(value, str):
        return value
    raise UsageError(f"{key}: expected {target.__name__}, got {quote(value)}")


def quote(value) -> str:
    """A short repr for error messages: a nested YAML alias bomb expands to megabytes."""
    return shorten(_REPR.repr(value))


def shorten(text: str) -> str:
    """`text`, cut to a length an error message can quote."""
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _check_range(key: str, value, metadata) -> None:
    low, high, choices = metadata.get("low"), metadata.get("high"), metadata.get("choices")
    if choices is not None and value not in choices:
        raise UsageError(f"{key}: must be one of {', '.join(choices)}; got {quote(value)}")
    if low is not None and (value < low or (metadata.get("open_low") and value == low)):
        bound = f"> {low}" if metadata.get("open_low") else f">= {low}"
        raise UsageError(f"{key}: must be {bound}, got {quote(value)}")
    if high is not None and value > high:
        raise UsageError(f"{key}: must be <= {high}, got {quote(value)}")


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
