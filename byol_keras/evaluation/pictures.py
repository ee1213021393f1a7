"""Pictures of a run's representation and training, written as PNG files with matplotlib (Agg).

- `tsne`: scikit-learn's t-SNE of test-split embeddings, coloured by label;
- `retrieval`: query images from the test split and their nearest
  neighbours (cosine similarity) in the train split, with labels;
- `occlusion`: how far the embedding moves (1 − cosine similarity to the
  unoccluded image's) when each patch is hidden, overlaid on the image;
- `curves`: loss, τ, the collapse indicator and kNN top-1 per epoch, from
  metrics.csv;
- `label-efficiency`: each fine-tuning task's test score against its label
  fraction, pretrained against random init, from the results in `eval/`
  (`label_efficiency.py`);
- each dense task's kind (`tasks.py`): `segmentation`, test images with their
  true and predicted masks, from the segmenter that `evaluate --protocol
  segment` kept, and `detection`, with their true and predicted boxes, from
  the detector of `--protocol detect` (`transfer/<task>/pictures.py`).

Images come from `--data` (default: the run's `data.val_source`): the test
split is `data.val_split`, the retrieval bank `eval.train_split`. Each image
is shown and embedded after the run's evaluation transform
(`augment/eval_transform.py`), as the evaluation protocols see it.

```python
# doctest: slow
paths = visualize_run("runs/mnist", "tsne")  # [Path("runs/mnist/pictures/tsne.png")]
assert [str(path) for path in paths] == ["runs/mnist/pictures/tsne.png"]
```
"""

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.data.labelled import check_disjoint
from byol_keras.errors import UsageError
from byol_keras.evaluation.features import Embedder, source_arrays
from byol_keras.evaluation.knn import l2_normalize_rows, nearest_neighbours
from byol_keras.evaluation.label_efficiency import label_efficiency_figure, label_efficiency_points
from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory
from byol_keras.tasks import dense_tasks

# A dense task's pictures are drawn by its own folder; its kind comes from the table.
TASK_KINDS = {task.picture: task for task in dense_tasks() if task.picture}
KINDS = ("tsne", "retrieval", "occlusion", "curves", "label-efficiency", *TASK_KINDS)
TSNE_POINTS = 2000
RETRIEVAL_QUERIES, RETRIEVAL_NEIGHBOURS, RETRIEVAL_BANK = 8, 8, 10_000
OCCLUSION_IMAGES = 4
CURVES = (("loss", "BYOL loss"), ("tau", "target EMA τ"), ("collapse", "collapse indicator"))


def visualize_run(
    run_dir,
    kind: str,
    data: str | None = None,
    output=None,
    **results: str | None,
) -> list[Path]:
    """Draws one kind of picture for a run and returns the PNG paths it wrote.

    `output` is a `.png` file or a folder (default: `<run>/pictures`).

    Args:
        run_dir: A finished run directory.
        kind: `"tsne"`, `"retrieval"`, `"occlusion"`, `"curves"`, `"label-efficiency"`, or
            a dense task's:
            `"segmentation"` or `"detection"`.
        data: A labelled source spec; default: the run's `data.val_source`.
        output: A `.png` file or a folder.
        **results: For a task's kind, the result to draw under the name of the task's
            model: `segmenter="segment-10pct"`, `detector="detect-10pct"`
            (default: `segment` or `detect`, or the only one there is).

    Returns:
        The paths of the PNG files written.

    ```python
    visualize_run("runs/quickstart", "curves", output="curves.png")
    ```
    """
    if kind not in KINDS:
        raise UsageError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    unknown = set(results) - {task.model for task in TASK_KINDS.values()}
    if unknown:
        raise TypeError(f"visualize_run() got an unexpected keyword argument {unknown.pop()!r}")
    run = RunDirectory(run_dir)
    if kind in TASK_KINDS:
        task = TASK_KINDS[kind]
        if data is not None:
            raise UsageError(
                f"--data: --kind {kind} draws the test split its {task.model} was scored on; "
                f"choose the {task.model} with --{task.model}"
            )
        draw = task.module("pictures").picture
        return [draw(run, results.get(task.model), _output_path(run, kind, output))]
    if kind == "curves":
        if not run.metrics_path.is_file():
            raise UsageError(f"--run: '{run.root}' has no {run.metrics_path.name} to plot")
        figure = _curves_figure(run.metrics_path)
    elif kind == "label-efficiency":
        points = label_efficiency_points(run.eval_dir)
        if not points:
            raise UsageError(
                f"--run: '{run.root}' has no --label-fraction results in eval/ to plot; run "
                "`byol-keras evaluate --protocol detect --label-fraction 0.1` (or segment, "
                "finetune) with and without --baseline random first"
            )
        figure = label_efficiency_figure(points, f"Label efficiency ({run.root.name})")
    else:
        run.require_finished()
        figure = _DRAWERS[kind](_picture_inputs(run, data))
    path = _output_path(run, kind, output)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return [path]


def _output_path(run: RunDirectory, kind: str, output) -> Path:
    if output is None:
        return run.pictures_dir / f"{kind}.png"
    output = Path(output)
    return output if output.suffix.lower() == ".png" else output / f"{kind}.png"


def _picture_inputs(run: RunDirectory, data: str | None) -> dict:
    """The test source, a bank loader, the embedder, a reader of transformed images, the seed."""
    config = load_config(run.config_path)
    spec = data or config.data.val_source
    if not spec:
        raise UsageError(f"--data: run '{run.root}' has no data.val_source; pass --data SOURCE")

    def load(split):
        return source_from_config(config, spec, split)

    test = load(config.data.val_split)
    backbone = load_model(run.backbone_path, compile=False)
    transform = EvalTransform.from_config(config)
    return {
        "test": test,
        "bank": lambda: load(config.eval.train_split),
        "embedder": Embedder(backbone, config.eval.batch_size, transform),
        "arrays": lambda source, count: source_arrays(
            source, count, config.train.seed, transform=transform
        ),
        "seed": config.train.seed,
    }


def _label_text(source, label: int) -> str:
    if label < 0:
        return "?"
    names = source.class_names or []
    return names[label] if label < len(names) else str(label)


def _tsne_figure(parts) -> Figure:
    from sklearn.manifold import TSNE

    source = parts["test"]
    images, labels = parts["arrays"](source, TSNE_POINTS)
    if len(images) < 5:
        raise UsageError(f"--data: {source.description} has too few images for t-SNE")
    features = l2_normalize_rows(parts["embedder"].embed(images))
    perplexity = min(30.0, (len(images) - 1) / 3)
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=parts["seed"]).fit_transform(
        features
    )
    figure = Figure(figsize=(8, 7), layout="constrained")
    axes = figure.add_subplot()
    colours = _colours(max(int(labels.max()) + 1, 1))
    for label in np.unique(labels):
        mask = labels == label
        axes.scatter(
            points[mask, 0],
            points[mask, 1],
            s=6,
            color=colours[label] if label >= 0 else "grey",
            label=_label_text(source, int(label)),
        )
    axes.legend(markerscale=3, fontsize=8, loc="best", title="label")
    axes.set_title(f"t-SNE of {len(images)} test embeddings ({source.description})", fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    return figure


def _colours(count: int):
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(index % palette.N) for index in range(count)]


def _retrieval_figure(parts) -> Figure:
    test, bank_source, embedder = parts["test"], parts["bank"](), parts["embedder"]
    check_disjoint(bank_source, test, "--data")  # else each query finds itself first
    query_images, query_labels = parts["arrays"](test, RETRIEVAL_QUERIES)
    bank_images, bank_labels = parts["arrays"](bank_source, RETRIEVAL_BANK)
    # The search of the retrieval protocol: cosine similarity, ties to the lower index.
    similarity, neighbours = nearest_neighbours(
        embedder.embed(query_images), embedder.embed(bank_images), RETRIEVAL_NEIGHBOURS
    )
    rows, columns = len(query_images), neighbours.shape[1] + 1
    figure = Figure(figsize=(1.3 * columns, 1.45 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        query_label = int(query_labels[row])
        _show(grid[row, 0], query_images[row], f"query: {_label_text(test, query_label)}", "blue")
        for column, index in enumerate(neighbours[row], start=1):
            label = int(bank_labels[index])
            colour = "green" if label == query_label and label >= 0 else "red"
            text = f"{_label_text(bank_source, label)} {similarity[row, column - 1]:.2f}"
            _show(grid[row, column], bank_images[index], text, colour)
    figure.suptitle(
        f"Nearest neighbours (cosine) among {len(bank_images)} train images; "
        "label and similarity above each; green: same label as the query, red: different",
        fontsize=9,
    )
    return figure


def _show(axes, image: np.ndarray, title: str, colour: str) -> None:
    axes.imshow(image, interpolation="nearest")
    axes.set_title(title, fontsize=7, color=colour)
    axes.set_xticks([])
    axes.set_yticks([])


def occlusion_map(embedder: Embedder, image: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """1 − cosine(embedding of the image, embedding with one patch hidden) for each patch position.

    A hidden patch is filled with the image's mean colour, which adds no new
    edge on a uniform background (a grey square on a black MNIST background
    would itself look like a stroke). Returns a [rows, columns] map;
    position (i, j) hides the square whose top-left corner is (i·stride, j·stride).

    ```python
    image = np.zeros([16, 16, 3], np.uint8)
    embedder = Embedder(build_backbone("tiny", image_size=16, width=4))
    heat = occlusion_map(embedder, image, patch=8, stride=4)
    assert heat.shape == (3, 3)  # rows, columns of patch positions
    ```
    """
    size = image.shape[0]
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    fill = np.round(image.reshape(-1, image.shape[-1]).mean(axis=0)).astype(image.dtype)
    occluded = []
    for top in starts:
        for left in starts:
            copy = image.copy()
            copy[top : top + patch, left : left + patch] = fill
            occluded.append(copy)
    features = l2_normalize_rows(embedder.embed(np.stack([image, *occluded])))
    distance = 1.0 - features[1:] @ features[0]
    return distance.reshape(len(starts), len(starts))


def _occlusion_figure(parts) -> Figure:
    test, embedder = parts["test"], parts["embedder"]
    images, labels = parts["arrays"](test, OCCLUSION_IMAGES)
    size = images.shape[1]
    patch, stride = max(2, size // 4), max(1, size // 8)
    figure = Figure(figsize=(6.5, 3.0 * len(images)), layout="constrained")
    grid = figure.subplots(len(images), 2, squeeze=False)
    for row, image in enumerate(images):
        heat = occlusion_map(embedder, image, patch, stride)
        _show(grid[row, 0], image, f"label {_label_text(test, int(labels[row]))}", "black")
        # Each map cell covers the patch's centre region in the image.
        upsampled = _patch_average(heat, size, patch, stride)
        grid[row, 1].imshow(image, interpolation="nearest")
        overlay = grid[row, 1].imshow(
            upsampled, cmap="inferno", alpha=0.6, interpolation="bilinear"
        )
        grid[row, 1].set_title("1 − cos when the patch is hidden", fontsize=8)
        grid[row, 1].set_xticks([])
        grid[row, 1].set_yticks([])
        figure.colorbar(overlay, ax=grid[row, 1], shrink=0.8)
    figure.suptitle(
        f"Occlusion sensitivity ({patch}x{patch} patch of the mean colour, stride {stride})"
    )
    return figure


def _patch_average(heat: np.ndarray, size: int, patch: int, stride: int) -> np.ndarray:
    """Per pixel, the mean embedding change over every patch that covers the pixel."""
    total = np.zeros([size, size])
    count = np.zeros([size, size])
    for i in range(heat.shape[0]):
        for j in range(heat.shape[1]):
            top, left = i * stride, j * stride
            total[top : top + patch, left : left + patch] += heat[i, j]
            count[top : top + patch, left : left + patch] += 1
    return total / np.maximum(count, 1)


def _curves_figure(metrics_path: Path) -> Figure:
    rows = list(csv.DictReader(metrics_path.open()))
    if not rows:
        raise UsageError(f"--run: {metrics_path} has no epochs yet")
    epochs = np.array([int(row["epoch"]) + 1 for row in rows])
    panels = [(key, title) for key, title in CURVES if key in rows[0]]
    if "knn_top1" in rows[0]:
        panels.append(("knn_top1", "kNN top-1 (held-out)"))
    figure = Figure(figsize=(5 * min(len(panels), 2), 3.6 * math.ceil(len(panels) / 2)))
    figure.set_layout_engine("constrained")
    for index, (key, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(math.ceil(len(panels) / 2), min(len(panels), 2), index)
        values = np.array([_number(row.get(key)) for row in rows])
        measured = ~np.isnan(values)
        axes.plot(epochs[measured], values[measured], marker="o" if measured.sum() < 30 else None)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    figure.suptitle(f"Training curves ({metrics_path.parent.name})")
    return figure


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan  # CSVLogger writes "NA" or "nan" where an epoch has no value


_DRAWERS = {"tsne": _tsne_figure, "retrieval": _retrieval_figure, "occlusion": _occlusion_figure}
