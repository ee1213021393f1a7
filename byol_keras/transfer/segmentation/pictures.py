"""`visualize --kind segmentation`: test images beside their true and predicted masks.

The segmenter is the one `evaluate --protocol segment` kept, `<run>/eval/<name>/model.keras`
(`name` defaults to `segment`), on the data, splits and sizes its result records.
Every class has a fixed colour (`colours.class_colours`: the same in every
picture and run with as many classes), void is black, and a legend names them.

```python
# doctest: slow
from byol_keras.evaluation import evaluate_run

tiny = ["segment.epochs=1", "segment.image_size=[24, 32]", "segment.decoder_channels=8"]
evaluate_run("runs/quickstart", "segment", "segfolder:camvid", 0.5, overrides=tiny)
run = RunDirectory("runs/quickstart")
path = picture(run, "segment-50pct@segfolder_camvid", Path("seg.png"))
```
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from byol_keras.config import load_config
from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory
from byol_keras.transfer.colours import class_colours
from byol_keras.transfer.segmentation.model import predict_classes
from byol_keras.transfer.segmentation.protocol import result_test_split

PICTURE_IMAGES = 4
VOID_COLOUR = (0.0, 0.0, 0.0)


def colour_mask(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """An RGB picture of a class mask; values outside the classes (void) are black."""
    picture = np.tile(np.array(VOID_COLOUR), (*mask.shape, 1))
    known = mask < len(colours)
    picture[known] = colours[mask[known]]
    return picture


def picture(run: RunDirectory, name: str | None, path: Path) -> Path:
    """Draws test images, true masks and predicted masks in a grid with a legend; returns `path`."""
    run.require_finished()
    result, model_path = run.find_result("segment", name, "--segmenter")
    config = load_config(run.config_path)
    parameters = result["parameters"]
    size = tuple(parameters["image_size"])
    test = result_test_split(result, size)
    count = min(PICTURE_IMAGES, len(test))
    # Spread over the split: neighbouring frames of a video look alike.
    chosen = np.linspace(0, len(test) - 1, count).round().astype(int)
    segmenter = load_model(model_path, compile=False)
    predicted = predict_classes(segmenter, test.images[chosen], config.segment.batch_size)
    colours = class_colours(result["num_classes"])
    figure = Figure(figsize=(10, 2.6 * count + 0.9), layout="constrained")
    grid = figure.subplots(count, 3, squeeze=False)
    for row, index in enumerate(chosen):
        true = test.masks[index]
        labelled = true != result["ignore_index"]
        accuracy = (
            float(np.mean(predicted[row][labelled] == true[labelled])) if labelled.any() else 0
        )
        panels = (
            (test.images[index], Path(test.names[index]).name),
            (colour_mask(true, colours), "true mask"),
            (colour_mask(predicted[row], colours), f"predicted ({accuracy:.0%} of pixels right)"),
        )
        for axes, (shown, title) in zip(grid[row], panels, strict=True):
            axes.imshow(shown, interpolation="nearest")
            axes.set_title(title, fontsize=9)
            axes.set_axis_off()
    handles = [
        Patch(color=colour, label=label)
        for colour, label in zip(colours, result["class_names"], strict=True)
    ] + [Patch(color=VOID_COLOUR, label="void (not scored)")]
    figure.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8)
    figure.suptitle(
        f"{result['backbone']} backbone, {Path(model_path).parent.name}: test mean IoU "
        f"{result['mean_iou']:.1%}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
