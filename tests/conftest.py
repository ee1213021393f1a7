"""Shared fixtures: the real data in ../shared/data, skipped with a reason when it is absent."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# BYOL_KERAS_SHARED_DATA points elsewhere, e.g. from a git worktree that is not beside it.
SHARED_DATA = Path(
    os.environ.get("BYOL_KERAS_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


def pytest_collection_modifyitems(config, items):
    """Tests that read ../shared/data are `data` tests, and slow: each unpacks or reads a
    whole real data set."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets, ../shared/data from the repository root."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent: real-data test skipped")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_npz(shared_data) -> Path:
    """MNIST in the keras.datasets `.npz` layout (60,000 train and 10,000 test images)."""
    path = shared_data / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent: real-data test skipped")
    return path


@pytest.fixture(scope="session")
def cifar10_folder(shared_data, tmp_path_factory) -> Path:
    """CIFAR-10 as JPEG files, unpacked once per session: `<root>/{train,test}/<class>/NNNN.jpg`."""
    archive = shared_data / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent: real-data test skipped")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    tar = shutil.which("tar")
    if tar:  # several times faster than tarfile for 60,000 small members
        subprocess.run([tar, "-xzf", str(archive), "-C", str(root)], check=True)
    else:
        with tarfile.open(archive) as bundle:
            # The "data" filter (Python >= 3.10.12) refuses links and paths outside root.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            bundle.extractall(root, **safe)
    return root


@pytest.fixture(scope="session")
def camvid_folder(shared_data, tmp_path_factory) -> Path:
    """CamVid (11 classes, void 11), unpacked once per session: `<root>/<split>/{images,masks}`."""
    archive = shared_data / "camvid-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent: real-data test skipped")
    root = tmp_path_factory.mktemp("camvid-jpeg")
    with tarfile.open(archive) as bundle:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        bundle.extractall(root, **safe)
    return root / "camvid"


@pytest.fixture
def tiny_byol():
    """Builds the tiny seeded model the unit tests share: `tiny_byol(image_size=16, **kwargs)`.

    A `tiny` backbone of width 4 and heads of 8/16/16 units train in milliseconds a step;
    `method` picks the class (BYOL by default) and keyword arguments other than
    `image_size`, `width` and `seed` go to its constructor.
    """
    import keras

    from byol_keras.catalog import method_class
    from byol_keras.nn.backbones import build_backbone

    def build(image_size: int = 16, width: int = 4, seed: int = 0, method: str = "byol", **kwargs):
        keras.utils.set_random_seed(seed)
        heads = {"projection_dim": 8, "projector_hidden_dim": 16, "predictor_hidden_dim": 16}
        backbone = build_backbone("tiny", image_size, width=width)
        return method_class(method)(backbone, **{**heads, **kwargs})

    return build
