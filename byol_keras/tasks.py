"""The downstream tasks of `byol-keras evaluate`, in one table that imports neither Keras nor
TensorFlow.

Whatever must know every task reads it here, so that a new task cannot be
left out of one list: the command line's `--protocol`, `visualize --kind` and
`export --model` choices and its `--segmenter`-like options, the protocols
(`evaluation/evaluate.py`), the pictures and exports, the resume check (a
task's config section never changes what training learns), and `load_model`
(the module whose import registers a task's saved network).

A dense task is a folder under `transfer/`, `package`, that holds the same modules:

- `model.py`: its network; importing it registers the classes a saved model names;
- `protocol.py`: `PROTOCOL`, a `transfer.protocol.DenseProtocol` that `evaluate` runs;
- `pictures.py`: `picture(run, result_name, path)`, what `visualize --kind <picture>` draws;
- `export.py`: `export_model(run, request, result, model_path)`, what `export --model` runs.

```python
assert TASKS["detect"].section == "detect" and TASKS["detect"].label_fraction
assert task_sections() == ("detect", "eval", "segment")
assert [task.model for task in dense_tasks()] == ["segmenter", "detector"]
```
"""

import importlib
from dataclasses import dataclass
from types import ModuleType

TRANSFER = "byol_keras.transfer"


@dataclass(frozen=True)
class Task:
    """A downstream task as `evaluate --protocol` names it.

    Args:
        protocol: The `--protocol` value.
        section: The config section that holds the task's settings.
        label_fraction: Whether the task fine-tunes on a `--label-fraction` of its labels.
        package: The folder under `byol_keras/transfer/` of a dense task (its model,
            protocol, pictures and export); None for the protocols of `evaluation/`,
            which keep no network.
        model: What `export --model` calls the network the task keeps, and the option
            (`--segmenter`) that picks one of its results.
        picture: Its `visualize --kind`.
        score: The result key and its name that the label-efficiency picture plots, for
            a task with `label_fraction`.
    """

    protocol: str
    section: str
    label_fraction: bool = False
    package: str | None = None
    model: str | None = None
    picture: str | None = None
    score: tuple[str, str] | None = None

    @property
    def model_module(self) -> str | None:
        """The module whose import registers the classes of the network the task saves."""
        return f"{TRANSFER}.{self.package}.model" if self.package else None

    def module(self, name: str) -> ModuleType:
        """The task's module `name` (`protocol`, `pictures`, `export`), imported on first use."""
        return importlib.import_module(f"{TRANSFER}.{self.package}.{name}")


TASKS = {
    task.protocol: task
    for task in (
        Task("linear", "eval"),
        Task("knn", "eval"),
        Task("finetune", "eval", label_fraction=True, score=("top1", "test top-1 accuracy")),
        Task("retrieval", "eval"),
        Task(
            "segment",
            "segment",
            True,
            "segmentation",
            "segmenter",
            "segmentation",
            score=("mean_iou", "test mean IoU"),
        ),
        Task(
            "detect",
            "detect",
            True,
            "detection",
            "detector",
            "detection",
            score=("ap50", "test AP50"),
        ),
    )
}
PROTOCOLS = tuple(TASKS)


def dense_tasks() -> tuple[Task, ...]:
    """The tasks that keep a network of their own (a folder under `transfer/`), in table order."""
    return tuple(task for task in TASKS.values() if task.package)


def task_sections() -> tuple[str, ...]:
    """The config sections of the downstream tasks, sorted: none changes what training learns."""
    return tuple(sorted({task.section for task in TASKS.values()}))


def listed(names, last: str = "or") -> str:
    """`a, b or c`: names as an error message or help text lists them."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"
