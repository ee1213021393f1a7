"""The method classes: the one-class BYOL's loss curves and saved models, the registry."""

import inspect
import json

import keras
import numpy as np
import pytest

from byol_keras.builders import model_from_config
from byol_keras.catalog import METHODS, method_class
from byol_keras.config import load_config
from byol_keras.methods.base import SelfSupervisedModel
from byol_keras.methods.byol import BYOL
from byol_keras.methods.simclr import SimCLR
from byol_keras.methods.simsiam import SimSiam
from byol_keras.registration import load_model
from tests.fixtures import make_method_curves as fixtures

RECORDED = json.loads((fixtures.FIXTURES / "method_curves.json").read_text())


@pytest.mark.parametrize("case", fixtures.CASES)
def test_each_method_reproduces_the_loss_curve_of_the_one_class_byol(case):
    # Recorded by tests/fixtures/make_method_curves.py with BYOL(..., method=...) of 294f2b8.
    model = fixtures.train(case)
    assert type(model).method == fixtures.CASES[case][0]
    assert len(model.step_losses) == RECORDED["steps"]
    np.testing.assert_allclose(model.step_losses, RECORDED["curves"][case], rtol=1e-5)


@pytest.mark.parametrize(("case", "expected_class"), [("byol", BYOL), ("simclr", SimCLR)])
def test_a_model_saved_by_the_one_class_byol_loads_as_its_method(case, expected_class):
    model = load_model(fixtures.FIXTURES / f"saved_{case}.keras")
    assert type(model) is expected_class
    outputs = model.online_backbone(fixtures.probe_images()).numpy()
    np.testing.assert_allclose(outputs, RECORDED["backbone_outputs"][case], rtol=1e-6, atol=1e-6)
    method, kwargs = fixtures.CASES[case]
    assert model.predictor is None if method == "simclr" else model.predictor is not None
    if case == "byol":
        assert (model.tau_base, model.tau_schedule) == (kwargs["tau_base"], "cosine")
        assert int(model.total_steps.numpy()) == fixtures.STEPS
        online = model.online_projector.get_weights()
        # The target moved by EMA during the recorded steps: its own weights, not a fresh copy.
        assert any(
            not np.allclose(o, t)
            for o, t in zip(online, model.target_projector.get_weights(), strict=True)
        )
    else:
        assert model.temperature == pytest.approx(kwargs["temperature"])
    # The optimizer state came back too: training goes on from step 5.
    assert int(model.optimizer.iterations.numpy()) == fixtures.STEPS
    history = model.fit(fixtures.views(seed=4).take(1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_the_registry_names_each_class_and_the_keys_its_constructor_takes():
    for name, method in METHODS.items():
        cls = method_class(name)
        assert issubclass(cls, SelfSupervisedModel) and cls.method == name
        assert keras.saving.get_registered_object(f"byol_keras>{cls.__name__}") is cls
        parameters = cls.__init__.__code__.co_varnames
        assert all(key in parameters for key in method.options), (name, method.options)
    assert {method_class(name) for name in METHODS} == {BYOL, SimSiam, SimCLR}


@pytest.mark.parametrize(
    ("method", "expected_class", "predictor"),
    [("byol", BYOL, True), ("simsiam", SimSiam, True), ("simclr", SimCLR, False)],
)
def test_model_from_config_builds_the_method_with_its_own_keys(method, expected_class, predictor):
    config = load_config(
        None,
        [
            f"model.method={method}",
            "model.projection_dim=8",
            "model.projector_hidden_dim=16",
            "model.predictor_hidden_dim=16",
            "model.tau_base=0.9",
            "model.tau_schedule=constant",
            "model.temperature=0.4",
        ],
    )
    backbone = fixtures.build("byol").online_backbone
    model = model_from_config(config, backbone, total_steps=7)
    assert type(model) is expected_class
    assert (model.predictor is not None) == predictor
    assert int(model.total_steps.numpy()) == 7
    assert hasattr(model, "tau_base") == (method == "byol")
    assert hasattr(model, "temperature") == (method == "simclr")
    if method == "byol":
        assert (model.tau_base, model.tau_schedule) == (0.9, "constant")
    if method == "simclr":
        assert model.temperature == pytest.approx(0.4)


def test_the_constructor_arguments_belong_to_their_method():
    backbone = fixtures.build("byol").online_backbone
    with pytest.raises(ValueError, match="temperature"):
        BYOL(backbone, temperature=0.1)
    with pytest.raises(ValueError, match="tau_base"):
        SimCLR(backbone, tau_base=0.9)
    with pytest.raises(ValueError, match="tau_schedule"):
        SimSiam(backbone, tau_schedule="constant")


def test_the_classes_keep_their_public_addresses():
    import byol_keras

    assert (byol_keras.BYOL, byol_keras.SimSiam, byol_keras.SimCLR) == (BYOL, SimSiam, SimCLR)


@pytest.mark.parametrize("cls", [SelfSupervisedModel, BYOL, SimCLR])
def test_the_docstring_documents_every_constructor_argument(cls):
    section = cls.__doc__.split("Args:")[1].split("```")[0]
    documented = set()
    for line in section.splitlines():
        # An entry is "name: ..." or "a, b, c: as for ...", indented once (8 spaces).
        if line.startswith(" " * 8) and not line.startswith(" " * 9) and ":" in line:
            documented.update(n.strip().lstrip("*") for n in line.split(":")[0].split(","))
    parameters = set(inspect.signature(cls).parameters)
    expected = parameters - {"kwargs"} if cls is SelfSupervisedModel else parameters
    assert documented == expected
