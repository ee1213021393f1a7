"""An independent reference for the evaluation transform: Pillow's antialiased bilinear resize.

Pillow's `Image.resize(size, BILINEAR, box=...)` resamples a float (mode F)
channel with the triangle filter widened by the reduction factor, takes the
box in continuous coordinates and lets the filter reach the pixels around
the box: the definition `byol_keras.augment.eval_transform` implements with
TensorFlow ops, written by other people in C.

```python
expected = pil_eval_transform(photo, 32)  # float32 [32, 32, 3] in [0, 1]
```
"""

import numpy as np
from PIL import Image


def pil_eval_transform(
    image: np.ndarray, size: int, resize: str = "center_crop", crop_ratio: float = 1.0
) -> np.ndarray:
    """The evaluation transform of one uint8 image [H, W, 3], computed by Pillow, in [0, 1]."""
    height, width = image.shape[:2]
    if resize == "squash":
        box = (0.0, 0.0, float(width), float(height))
    else:
        side = crop_ratio * min(height, width)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
    channels = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                (size, size), Image.Resampling.BILINEAR, box=box
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1) / 255.0
