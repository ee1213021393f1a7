"""The method classes under their former address: `from byol_keras.model import BYOL` still works.

The methods live in `byol_keras.methods` (`BYOL`, `SimSiam`, `SimCLR`).

```python
from byol_keras.model import BYOL  # the same class as byol_keras.methods.byol.BYOL
```
"""

from byol_keras.methods.byol import BYOL
from byol_keras.methods.simclr import SimCLR
from byol_keras.methods.simsiam import SimSiam

__all__ = ["BYOL", "SimCLR", "SimSiam"]
