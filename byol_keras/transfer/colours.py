"""The colour of each class in the pictures of every dense task, fixed by its index.

```python
class_colours(11)[3]  # the colour of class 3 in every picture of an 11-class task
```
"""

import numpy as np
from matplotlib import colormaps


def class_colours(count: int) -> np.ndarray:
    """A fixed RGB colour per class index, float [count, 3]: tab20's ten strong colours, then
    its ten light ones (tab20 pairs them, so neighbours would look alike), then hsv for more.

    ```python
    class_colours(11)[3]  # the colour of class 3 in every picture
    ```
    """
    if count <= 20:
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return np.array([colormaps["tab20"](index)[:3] for index in order[:count]])
    return np.array([colormaps["hsv"](index / count)[:3] for index in range(count)])
