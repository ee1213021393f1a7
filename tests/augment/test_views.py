"""The view recipes and the `augment.*` config keys: one declaration of each range, one checker."""

import pytest

from byol_keras.augment.views import view_params
from byol_keras.catalog import PRESETS
from byol_keras.config import load_config
from byol_keras.errors import UsageError


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("crop_area", [0.5, 0.2]),
        ("crop_area", [0, 1]),
        ("crop_area", [0.2, 1.5]),
        ("crop_aspect", [0, 1]),
        ("blur_sigma", [0.0, 1.0]),
        ("hue", 0.6),
        ("flip_prob", 1.5),
        ("brightness", -0.1),
        ("solarize_prob", [0.1, 2]),
        ("blur_prob", 0.5),
        ("color", "hsv"),
    ],
)
def test_the_config_and_the_view_recipes_refuse_a_value_alike(key, value):
    with pytest.raises(UsageError) as from_config:
        load_config(None, [f"augment.{key}={value}"])
    with pytest.raises(UsageError) as from_views:
        view_params("byol", **{key: value})
    assert str(from_config.value) == f"augment.{from_views.value}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_config_override_reaches_both_views_as_the_recipe_reads_it(preset):
    config = load_config(
        None,
        [f"augment.preset={preset}", "augment.crop_area=[0.2, 1]", "augment.blur_prob=[0.5, 0]"],
    )
    view1, view2 = view_params(preset, **config.augment.overrides())
    assert view1.crop_area == view2.crop_area == (0.2, 1.0)
    assert (view1.blur_prob, view2.blur_prob) == (0.5, 0.0)
    # The keys the config leaves null keep the preset's numbers.
    assert (view1.hue, view2.solarize_prob) == (
        PRESETS[preset][0].hue,
        PRESETS[preset][1].solarize_prob,
    )
