"""Every picture command writes a real PNG of the expected size, through the CLI."""

import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.cli import main
from byol_keras.data import load_source
from byol_keras.evaluation.features import Embedder, source_arrays
from byol_keras.evaluation.monitor import KnnMonitor
from byol_keras.evaluation.pictures import occlusion_map
from byol_keras.registration import load_model
from tests.helpers.runs import make_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny run trained for three short epochs with the kNN monitor feeding metrics.csv."""
    run = make_run(tmp_path_factory.mktemp("run"))
    model = load_model(run.model_path)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    train = load_source("digits", split="train", image_size=8)
    test = load_source("digits", split="test", image_size=8)
    monitor = KnnMonitor.from_sources(train, test, max_bank=300, every_epochs=1, k=20)
    images = train.dataset.map(lambda image, label: tf.cast(image, tf.float32) / 255.0)
    pairs = images.batch(32).map(lambda x: (x, tf.image.flip_left_right(x))).repeat()
    model.fit(
        pairs,
        epochs=3,
        steps_per_epoch=3,
        verbose=0,
        callbacks=[monitor, keras.callbacks.CSVLogger(str(run.metrics_path))],
    )
    model.online_backbone.save(run.backbone_path)
    return run


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


@pytest.mark.parametrize(
    ("kind", "size"),
    [("curves", (1000, 720)), pytest.param("tsne", (800, 700), marks=pytest.mark.slow),
     pytest.param("retrieval", (1170, 1160), marks=pytest.mark.slow), ("occlusion", (650, 1200))],
)  # fmt: skip
def test_every_kind_writes_a_png(trained_run, tmp_path, capsys, kind, size):
    output = tmp_path / f"{kind}.png"
    code = main(
        ["visualize", "--run", str(trained_run.root), "--kind", kind, "--output", str(output)]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == str(output)
    assert png_size(output) == size  # figure inches × 100 dpi
    assert output.stat().st_size > 10_000


def test_default_output_is_the_run_pictures_folder(trained_run, capsys):
    assert main(["visualize", "--run", str(trained_run.root), "--kind", "curves"]) == 0
    assert (trained_run.pictures_dir / "curves.png").is_file()


def test_occlusion_map_is_zero_where_hiding_changes_nothing():
    keras.utils.set_random_seed(0)
    from byol_keras.nn.backbones import build_backbone

    embedder = Embedder(build_backbone("tiny", 8, width=4))
    image = np.full([8, 8, 3], 77, np.uint8)  # already its own mean colour everywhere
    assert np.allclose(occlusion_map(embedder, image, patch=4, stride=2), 0.0, atol=1e-6)
    images, _ = source_arrays(load_source("digits", split="test", image_size=8), 1)
    heat = occlusion_map(embedder, images[0], patch=4, stride=2)
    assert heat.shape == (3, 3) and heat.max() > 0


def test_bad_requests_exit_with_code_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for kind in ("curves", "tsne"):
        assert main(["visualize", "--run", str(tmp_path / "empty"), "--kind", kind]) == 2
        assert capsys.readouterr().err.startswith("byol-keras: error: --run:")
