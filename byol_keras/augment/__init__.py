"""BYOL's augmentations: views (the numbers), layers (crop, blur), the augmenter and pipelines.

- `views.py`: the presets with overrides, checked (`view_params("cifar")`); `ViewParams`
  and the presets themselves are declared in `byol_keras.catalog`.
- `layers.py`: our own `RandomResizedCrop` and `RandomGaussianBlur`, and seed helpers.
- `augmenter.py`: `BYOLAugmenter`, the layer that draws one view of a batch.
- `crops.py`: each view's crop cut per image from the original, for images of their own sizes.
- `pipelines.py`: `make_augmenter`, `image_batches` and `pair_dataset` for `fit`.
- `eval_transform.py`: `EvalTransform`, the one deterministic resize and centre crop
  that evaluation, `embed` and the exported models apply.

```python
from byol_keras.augment import make_augmenter, pair_dataset
from byol_keras.data import load_source

source = load_source("digits", image_size=16)
pairs = pair_dataset(source, make_augmenter("digits", image_size=16, seed=0), 32, seed=0)
```
"""

from byol_keras.augment.augmenter import BYOLAugmenter, apply_in_order
from byol_keras.augment.pipelines import image_batches, make_augmenter, pair_dataset
from byol_keras.augment.views import view_params
from byol_keras.catalog import ViewParams

__all__ = [
    "BYOLAugmenter",
    "ViewParams",
    "apply_in_order",
    "image_batches",
    "make_augmenter",
    "pair_dataset",
    "view_params",
]
