"""Evaluation of a run's backbone: the protocols and the tools they share.

- `evaluate.py`: `evaluate_run` (linear, k-NN, fine-tune, retrieval) and
  `compare_with_random_init`.
- `linear.py`, `finetune.py`, `knn.py`, `retrieval.py`: the protocols' training and scoring;
  `knn.py` also holds the bounded-memory neighbour search that retrieval shares.
- `embed.py`: `embed_run`, every image of a source embedded into a `.npy` or `.parquet` file.
- `features.py`: `Embedder`, batched backbone features of a source.
- `monitor.py`: `KnnMonitor`, the k-NN accuracy logged during training.
- `pictures.py`: `visualize_run` (t-SNE, nearest neighbours, occlusion maps; a
  downstream task's pictures come from its folder in `byol_keras.transfer`).
- `metrics.py`: top-k and per-class accuracy.

Dense transfer (`--protocol segment`, `detect`) lives in `byol_keras.transfer`, one
folder per task; `evaluate.py` reaches it through the table of `byol_keras.tasks`.
Evaluation never imports `byol_keras.export`: what both need, the run directory and
its networks, is in `byol_keras.runs`.

```python
from byol_keras.evaluation import evaluate_run

result = evaluate_run("runs/quickstart", "linear")
```
"""

from byol_keras.evaluation.evaluate import PROTOCOLS, compare_with_random_init, evaluate_run

__all__ = ["PROTOCOLS", "compare_with_random_init", "evaluate_run"]
