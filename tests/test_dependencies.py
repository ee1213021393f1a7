"""The declared dependencies: the Keras floor excludes releases with known safe_mode bypasses."""

from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# Releases with a published safe_mode bypass (see the comment in pyproject.toml).
VULNERABLE_KERAS = ["3.10.0", "3.11.0", "3.11.2", "3.12.0", "3.13.1", "3.14.0", "3.15.0"]


def _requirement(name: str) -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, dependencies) if r.name == name)


def test_the_keras_floor_excludes_releases_with_safe_mode_bypasses():
    keras = _requirement("keras")
    assert not [v for v in VULNERABLE_KERAS if keras.specifier.contains(v)]
    assert keras.specifier.contains(version("keras")), "the installed Keras is outside the pin"


def test_keras_hub_is_the_hub_extra_on_the_pythons_it_supports_and_stays_out_of_the_core():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert "keras-hub" not in {Requirement(r).name for r in project["dependencies"]}
    for extra in ("hub", "test"):
        (hub,) = [
            r
            for r in map(Requirement, project["optional-dependencies"][extra])
            if r.name == "keras-hub"
        ]
        assert hub.marker.evaluate({"python_version": "3.11"})
        assert not hub.marker.evaluate({"python_version": "3.10"})
