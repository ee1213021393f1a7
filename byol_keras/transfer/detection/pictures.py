"""`visualize --kind detection`: test images with their true boxes and the predicted ones.

The detector is the one `evaluate --protocol detect` kept,
`<run>/eval/<name>/model.keras` (`name` defaults to `detect`), on the data
and test split its result records. True boxes are drawn dashed, predictions
(score at least the result's `score_threshold`) solid with their score; each
class has a fixed colour (`class_colours`, as in the segmentation pictures)
and a legend names them.

```python
# doctest: slow
from byol_keras.evaluation import evaluate_run

tiny = ["detect.epochs=1", "detect.image_size=[64, 64]", "detect.batch_size=2"]
evaluate_run("runs/bccd", "detect", label_fraction=0.5, overrides=tiny)
path = picture(RunDirectory("runs/bccd"), "detect-50pct", Path("boxes.png"))
```
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory
from byol_keras.transfer.colours import class_colours
from byol_keras.transfer.detection.prediction import predict_detections
from byol_keras.transfer.detection.preprocessor import prepare_split
from byol_keras.transfer.detection.protocol import image_subset, result_test_split

PICTURE_IMAGES = 4
COLUMNS = 2


def picture(run: RunDirectory, name: str | None, path: Path) -> Path:
    """Draws test images with true (dashed) and predicted (solid, scored) boxes; returns `path`.

    ```python
    # doctest: slow
    from byol_keras.evaluation import evaluate_run

    tiny = ["detect.epochs=1", "detect.image_size=[64, 64]", "detect.batch_size=2"]
    evaluate_run("runs/bccd", "detect", overrides=tiny)  # all train images: result "detect"
    picture(RunDirectory("runs/bccd"), None, Path("runs/bccd/pictures/detection.png"))
    ```
    """
    from byol_keras.data.image_files import pillow_decode

    run.require_finished()
    result, model_path = run.find_result("detect", name, "--detector")
    parameters = result["parameters"]
    test = result_test_split(result)
    count = min(PICTURE_IMAGES, len(test))
    chosen = np.linspace(0, len(test) - 1, count).round().astype(int)
    subset = image_subset(test, chosen)
    detector = load_model(model_path, compile=False)
    predictions = predict_detections(
        detector, prepare_split(subset, tuple(parameters["image_size"])), parameters["batch_size"]
    )
    colours = class_colours(len(result["class_names"]))
    rows = -(-count // COLUMNS)
    figure = Figure(figsize=(5 * COLUMNS, 4 * rows + 0.9), layout="constrained")
    grid = figure.subplots(rows, COLUMNS, squeeze=False)
    for axes in grid.ravel()[count:]:
        axes.set_axis_off()
    for axes, index, predicted in zip(grid.ravel(), range(count), predictions, strict=False):
        axes.imshow(pillow_decode(subset.paths[index]))
        for box, label in zip(subset.boxes[index], subset.classes[index], strict=True):
            _draw_box(axes, box, colours[label], "--")
        for box, score, label in zip(*predicted, strict=True):
            _draw_box(axes, box, colours[label], "-")
            axes.text(
                box[0],
                box[1],
                f"{score:.2f}",
                fontsize=7,
                color="white",
                verticalalignment="bottom",
                clip_on=True,
                bbox={"facecolor": colours[label], "pad": 1, "linewidth": 0},
            )
        axes.set_title(
            f"{Path(subset.names[index]).name}: {len(subset.boxes[index])} true, "
            f"{len(predicted.boxes)} predicted",
            fontsize=9,
        )
        axes.set_axis_off()
    handles = [
        Line2D([], [], color=colour, linewidth=3, label=label)
        for colour, label in zip(colours, result["class_names"], strict=True)
    ] + [
        Line2D([], [], color="black", linestyle="--", label="true box"),
        Line2D([], [], color="black", linestyle="-", label="predicted (score)"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8)
    figure.suptitle(
        f"{result['backbone']} backbone, {Path(model_path).parent.name}: test AP50 "
        f"{'n/a' if result['ap50'] is None else format(result['ap50'], '.1%')}; "
        f"predictions with score >= {parameters['score_threshold']}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _draw_box(axes, box, colour, style: str) -> None:
    x0, y0, x1, y1 = (float(value) for value in box)
    # imshow centres pixel i on i, so column x0's left edge is at x0 - 0.5.
    axes.add_patch(
        Rectangle(
            (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style
        )
    )
