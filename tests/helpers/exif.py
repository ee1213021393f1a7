"""JPEGs stored turned, with the EXIF orientation that shows them as intended.

The stored pixels are made with NumPy from the EXIF definitions, not with
Pillow's `exif_transpose`, which the code under test uses: orientation 3 is
shown turned by 180 degrees, 6 by 90 degrees clockwise, 8 by 90 degrees
anticlockwise.
"""

from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

# np.rot90 turns anticlockwise: storing the image turned back, so that showing it turns it upright.
STORED_TURNS = {3: 2, 6: 1, 8: -1}


def save_turned_jpeg(path: Path, displayed: np.ndarray, orientation: int) -> Path:
    """Saves `displayed` (uint8 [H, W, 3]) as a JPEG that a viewer shows as `displayed`."""
    stored = np.ascontiguousarray(np.rot90(displayed, STORED_TURNS[orientation]))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    return path


def quadrants(height: int, width: int) -> np.ndarray:
    """A uint8 [height, width, 3] image of four flat colours, one per quadrant, all far apart."""
    colours = np.array([[[230, 20, 20], [20, 230, 20]], [[20, 20, 230], [230, 230, 20]]], np.uint8)
    rows = np.arange(height) >= height // 2
    columns = np.arange(width) >= width // 2
    return colours[rows[:, None].astype(int), columns[None, :].astype(int)]
