"""Every ```python block in a docstring under byol_keras/ runs as its own test, so a broken
example fails CI.

Collection: `ast` reads each module's source (nothing is imported to collect) and takes
the docstrings of the module and of every class, function and method in it. Each fenced
```python block becomes one case, `module:qualname:index`, e.g.
`byol_keras.augment.crops:crop_window:0`.

Running: a block runs as a script (`exec`) in a fresh namespace that holds

- the names of the module it documents, as `doctest` gives them (a block in
  `data/source.py` may call `to_rgb` without importing it), and
- a small prelude for what every example may use: `np`, `tf`, `keras`, `ops` and the
  public API of `byol_keras` (`byol_keras.__all__`: `load_source`, `BYOL`, ...).

Anything else an example uses it defines or imports itself. It runs in a copy of a
working directory made once per session (`example_files`) that holds the files the
examples name: the repository's `configs/`, a tiny finished run at `runs/quickstart`
(digits) and one at `runs/mnist` (a small `mnist.npz` beside it), a photo folder
`photos/`, a few loose images, a VOC tree `bccd` with a run on it (untrained) at
`runs/bccd` (a ResNet-18 of width 16 with the ImageNet stem, 64 px: a pyramid down
to stride 32, as the detector needs), a COCO tree `my-coco` and a segfolder
`camvid`, all generated. An output shown in a comment is checked by an
`assert` where that is cheap.

Markers, as the first lines of a block:

- `# doctest: slow` - the block trains, exports or converts (seconds each):
  `@pytest.mark.slow`.
- `# doctest: skip <reason>` - the block cannot run here (a download, a server):
  reported as skipped with the reason.
- `# doctest: raises <ExceptionName>` - the block shows an error: it must raise an
  exception of that class (or a subclass).
"""

import ast
import functools
import importlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.boxes import random_scenes, write_coco, write_voc

PACKAGE = Path(__file__).resolve().parents[1] / "byol_keras"
FENCE = re.compile(r"^[ \t]*```python[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"#\s*doctest:\s*skip\s*(.*)")
SLOW = re.compile(r"#\s*doctest:\s*slow\b")
RAISES = re.compile(r"#\s*doctest:\s*raises\s+(\w+)")


@dataclass(frozen=True)
class Example:
    module: str  # byol_keras.augment.crops
    qualname: str  # crop_window, BYOLAugmenter.augment_crops or <module>
    index: int  # the block's place among the docstring's blocks
    code: str
    line: int  # where the docstring starts in the module's file

    @property
    def id(self) -> str:
        return f"{self.module}:{self.qualname}:{self.index}"

    def marker(self, pattern: re.Pattern) -> re.Match | None:
        """The first of the block's leading comment lines that matches `pattern`."""
        for line in self.code.splitlines():
            if not line.startswith("#"):
                return None
            if found := pattern.match(line):
                return found
        return None


def documented(tree: ast.AST, prefix: str = ""):
    """(qualname, docstring node) of every class, function and method under `tree`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            qualname = f"{prefix}{node.name}"
            yield qualname, node
            yield from documented(node, f"{qualname}.")


def collect_examples(package: Path = PACKAGE) -> list[Example]:
    """Every ```python block of every docstring in the package's modules, in file order."""
    examples = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for qualname, node in [("<module>", tree), *documented(tree)]:
            docstring = ast.get_docstring(node, clean=True)
            if not docstring:
                continue
            line = node.body[0].lineno
            for index, block in enumerate(FENCE.finditer(docstring)):
                examples.append(Example(module, qualname, index, block.group(1), line))
    return examples


def parameters(examples: list[Example]):
    """One `pytest.param` per example, with the skip and slow marks its markers ask for."""
    for example in examples:
        marks = []
        if skip := example.marker(SKIP):
            marks.append(pytest.mark.skip(reason=skip.group(1).strip() or "marked skip"))
        if example.marker(SLOW):
            marks.append(pytest.mark.slow)
        yield pytest.param(example, id=example.id, marks=marks)


EXAMPLES = collect_examples()


def test_the_collector_finds_blocks_in_module_class_and_method_docstrings():
    ids = {example.id for example in EXAMPLES}
    assert "byol_keras:<module>:0" in ids
    assert "byol_keras.augment.crops:crop_window:0" in ids
    assert "byol_keras.augment.augmenter:BYOLAugmenter.augment_crops:0" in ids
    # Every fence in the sources is one example: none is missed by the docstring walk.
    fences = sum(
        len(re.findall(r"^[ \t]*```python[ \t]*$", path.read_text(), re.M))
        for path in PACKAGE.rglob("*.py")
    )
    assert len(EXAMPLES) == fences
    # A marker read after the first code line would be ignored: refuse it.
    for example in EXAMPLES:
        code = example.code.splitlines()
        leading = next((i for i, line in enumerate(code) if not line.startswith("#")), len(code))
        late = [line for line in code[leading:] if "doctest:" in line]
        assert not late, f"{example.id}: markers go first: {late}"


@functools.cache
def prelude() -> dict:
    """The names every example may use without importing them."""
    import keras
    import tensorflow as tf
    from keras import ops

    import byol_keras

    public = {name: getattr(byol_keras, name) for name in byol_keras.__all__}
    return {**public, "np": np, "tf": tf, "keras": keras, "ops": ops}


def write_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path)


def write_segfolder(root: Path, per_split: int = 3, size=(24, 32)) -> None:
    """A `segfolder:` tree of 11 classes with void 11, CamVid's numbering."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for index in range(per_split):
            mask = rng.integers(0, 11, size).astype(np.uint8)
            mask[0, :] = 11
            name = f"{split}{index}"
            write_image(root / split / "images" / f"{name}.png", *size, seed=index)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{name}.png")


def write_run(root: Path, source: str, image_size: int = 16, **model) -> None:
    """A finished run of an untrained BYOL (default: `tiny` of width 4 on 16-pixel images), its
    metrics two epochs long; `model` overrides the model section."""
    import keras

    from byol_keras import BYOL, build_backbone
    from byol_keras.config import from_dict, save_config
    from byol_keras.runs import RunDirectory

    keras.utils.set_random_seed(0)
    heads = {"projection_dim": 8, "projector_hidden_dim": 16, "predictor_hidden_dim": 16}
    model = {"backbone": "tiny", "width": 4, "stem": "auto", **model}
    data = {"source": source, "val_source": source, "val_split": "test", "image_size": image_size}
    config = {
        "data": data,
        "model": {**model, **heads},
        "train": {"epochs": 2, "batch_size": 4},
    }
    run = RunDirectory(root).create()
    save_config(from_dict(config), run.config_path)
    backbone = build_backbone(model["backbone"], image_size, model["stem"], model["width"])
    byol = BYOL(backbone, **heads)
    byol.save(run.model_path)
    byol.online_backbone.save(run.backbone_path)
    run.metrics_path.write_text("epoch,loss\n0,3.5\n1,2.9\n")
    run.finish({"epochs": 2})


@pytest.fixture(scope="session")
def example_files(tmp_path_factory) -> Path:
    """The working directory the examples read from, made once; each test runs in a copy."""
    root = tmp_path_factory.mktemp("examples")
    shutil.copytree(PACKAGE.parent / "configs", root / "configs")
    write_run(root / "runs" / "quickstart", "digits")
    write_run(root / "runs" / "mnist", "npz:mnist.npz")
    photos = {"cat/1.jpg": (30, 40), "cat/2.png": (24, 24), "loose.webp": (20, 28)}
    for name, size in photos.items():
        write_image(root / "photos" / name, *size)
    write_image(root / "street.jpg", 48, 64)
    write_image(root / "cat.jpg", 48, 64, seed=1)
    write_image(root / "scan.bmp", 16, 16, seed=2)
    rng = np.random.default_rng(0)
    np.savez(
        root / "mnist.npz",
        x_train=rng.integers(0, 256, (40, 28, 28), np.uint8),
        y_train=np.arange(40) % 10,
        x_test=rng.integers(0, 256, (20, 28, 28), np.uint8),
        y_test=np.arange(20) % 10,
    )
    scenes = random_scenes(12)
    splits = {"train": scenes[:6], "val": scenes[6:9], "test": scenes[9:]}
    write_voc(root / "bccd", splits, ["Platelets", "RBC", "WBC"])
    write_coco(root / "my-coco", splits, ["person", "bicycle", "car"])
    # The detector needs strides 8-32: a ResNet-18 with the ImageNet stem.
    detection_backbone = {"backbone": "resnet18", "stem": "imagenet", "width": 16}
    write_run(root / "runs" / "bccd", "voc:bccd", 64, **detection_backbone)
    write_segfolder(root / "camvid")
    return root


@pytest.mark.parametrize("example", list(parameters(EXAMPLES)))
def test_docstring_example(example: Example, example_files: Path, tmp_path, monkeypatch):
    import keras

    workdir = tmp_path / "work"
    shutil.copytree(example_files, workdir)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(workdir))  # "~/photos" is the copy's photo folder
    keras.utils.set_random_seed(0)
    namespace = {**prelude(), **vars(importlib.import_module(example.module))}
    namespace["__name__"] = "__docstring_example__"
    code = compile(example.code, f"<{example.id} (docstring at line {example.line})>", "exec")
    if expected := example.marker(RAISES):
        with pytest.raises(Exception) as raised:
            exec(code, namespace)
        names = [cls.__name__ for cls in type(raised.value).__mro__]
        assert expected.group(1) in names, f"raised {raised.value!r}"
    else:
        exec(code, namespace)


def test_the_fast_examples_stay_few_enough_to_run_in_a_minute():
    """Most examples run in the fast suite: a slow or skip marker is for the few that must."""
    marked = [e for e in EXAMPLES if e.marker(SLOW) or e.marker(SKIP)]
    assert len(marked) < len(EXAMPLES) // 4, [e.id for e in marked]
