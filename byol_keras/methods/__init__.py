"""The self-supervised methods, one small `keras.Model` subclass each.

Each method subclasses `SelfSupervisedModel` (`base.py`), with its own loss and its
own targets:

| method | class | targets | loss | predictor |
|---|---|---|---|---|
| `byol` | `BYOL` | a target network that follows the online one by EMA | regression | yes |
| `simsiam` | `SimSiam` | the online projections, gradient stopped | regression | yes |
| `simclr` | `SimCLR` | none: the views are each other's positives | NT-Xent | no |

`steps.py` counts optimizer updates under gradient accumulation. The registry of
the names `model.method` takes is `byol_keras.catalog.METHODS`, free of Keras, so
that the config loads before TensorFlow. The methods never import `byol_keras.training`:
training builds on them.

```python
from byol_keras.catalog import method_class

model = method_class("simclr")(build_backbone("tiny", image_size=16, width=4), temperature=0.1)
```
"""
