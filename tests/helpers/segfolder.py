"""Small segfolder trees (`<split>/images`, `<split>/masks`) written with Pillow."""

import numpy as np
from PIL import Image

VOID = 11


def write_pair(root, split, name, mask, image=None, mask_size=None):
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    height, width = mask.shape
    pixels = image if image is not None else np.full((height, width, 3), 40 * mask[..., None] % 256)
    Image.fromarray(pixels.astype(np.uint8)).save(root / split / "images" / f"{name}.png")
    picture = Image.fromarray(mask.astype(np.uint8), mode="L")
    if mask_size:
        picture = picture.resize(mask_size, Image.NEAREST)
    picture.save(root / split / "masks" / f"{name}.png")


def make_segfolder(root, splits=("train", "val", "test"), size=(24, 32), per_split=3, seed=0):
    """A small segfolder whose masks hold classes 0..2 and the void index 11."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for index in range(per_split):
            mask = rng.integers(0, 3, size)
            mask[0, :] = VOID
            write_pair(root, split, f"{split}{index}", mask)
    return root
