"""The label-efficiency picture: test score against the fraction of labels, pretrained and random.

It reads every result in `<run>/eval/` of a task that fine-tunes on a
`--label-fraction` (`finetune`, `segment`, `detect`): one panel per task and
data set, the label fraction on a log axis, and one line per arm (the run's
pretrained backbone, and `--baseline random`) through the mean over
fine-tuning seeds, with each seed's score as a dot. Each task plots its
headline score (`tasks.py`): top-1 accuracy, mean IoU or AP50.

```python
points = label_efficiency_points("runs/bccd/eval")  # {} until its fine-tunes have run
points = points or {
    ("detect", "voc:bccd"): {
        "pretrained": {0.1: [0.68, 0.69], 1.0: [0.84]},
        "random_init": {0.1: [0.70, 0.71], 1.0: [0.85]},
    }
}
label_efficiency_figure(points).savefig("label_efficiency.png")
```
"""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from byol_keras.tasks import TASKS

ARMS = {"pretrained": "BYOL-pretrained", "random_init": "random init"}


def label_efficiency_points(eval_dir) -> dict:
    """Scores by (protocol, data), then arm, then label fraction: one per fine-tuning seed.

    Results without a label fraction (knn, linear, retrieval) and files that are
    not results are passed over.
    """
    points = defaultdict(lambda: {arm: defaultdict(list) for arm in ARMS})
    for path in sorted(Path(eval_dir).glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        task = TASKS.get(result.get("protocol") if isinstance(result, dict) else None)
        if task is None or task.score is None or result.get("backbone") not in ARMS:
            continue
        fraction = result.get("parameters", {}).get("label_fraction")
        score = result.get(task.score[0])
        if fraction is None or score is None:
            continue
        key = (task.protocol, result.get("data", ""))
        points[key][result["backbone"]][float(fraction)].append(float(score))
    return {
        key: {arm: dict(sorted(f.items())) for arm, f in arms.items()}
        for key, arms in points.items()
    }


def label_efficiency_figure(points: dict, title: str = "Label efficiency") -> Figure:
    """One panel per (protocol, data): each arm's seed mean against the label fraction."""
    figure = Figure(figsize=(5.2 * len(points), 3.8))
    figure.set_layout_engine("constrained")
    for index, ((protocol, data), arms) in enumerate(sorted(points.items()), start=1):
        axes = figure.add_subplot(1, len(points), index)
        for arm, marker in zip(ARMS, ("o", "s"), strict=True):
            by_fraction = arms[arm]
            if not by_fraction:
                continue
            fractions = np.array(list(by_fraction))
            means = np.array([100 * np.mean(scores) for scores in by_fraction.values()])
            line = axes.plot(fractions, means, marker=marker, label=ARMS[arm])[0]
            for fraction, scores in by_fraction.items():
                axes.scatter(
                    [fraction] * len(scores),
                    100 * np.asarray(scores),
                    s=12,
                    color=line.get_color(),
                    alpha=0.5,
                )
        axes.set_xscale("log")
        fractions = sorted({f for arm in arms.values() for f in arm})
        axes.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
        axes.minorticks_off()
        axes.set_xlabel("labelled training images")
        axes.set_ylabel(f"{TASKS[protocol].score[1]} (%)")
        axes.set_title(f"{protocol} on {data}", fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return figure
