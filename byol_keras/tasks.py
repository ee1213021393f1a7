"""The downstream tasks of `byol-keras evaluate`, in one table that imports neither Keras nor
TensorFlow.

Whatever must know every task reads it here, so that a new task cannot be
left out of one list: the command line's `--protocol` choices, the resume
check (a task's config section never changes what training learns), and
`load_model` (the module whose import registers a task's saved network).

```python
assert TASKS["detect"].section == "detect" and TASKS["detect"].label_fraction
assert task_sections() == ("detect", "eval", "segment")
```
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """A downstream task as `evaluate --protocol` names it.

    Args:
        protocol: The `--protocol` value.
        section: The config section that holds the task's settings.
        label_fraction: Whether the task fine-tunes on a `--label-fraction` of its labels.
        model_module: The module whose import registers the classes of the network the
            task saves under `<run>/eval/`; None when it saves none.
    """

    protocol: str
    section: str
    label_fraction: bool = False
    model_module: str | None = None


TASKS = {
    task.protocol: task
    for task in (
        Task("linear", "eval"),
        Task("knn", "eval"),
        Task("finetune", "eval", label_fraction=True),
        Task("retrieval", "eval"),
        Task("segment", "segment", True, "byol_keras.transfer.segmentation.model"),
        Task("detect", "detect", True, "byol_keras.transfer.detection.model"),
    )
}
PROTOCOLS = tuple(TASKS)


def task_sections() -> tuple[str, ...]:
    """The config sections of the downstream tasks, sorted: none changes what training learns."""
    return tuple(sorted({task.section for task in TASKS.values()}))
