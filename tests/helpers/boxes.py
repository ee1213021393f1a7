"""Generated detection scenes, written as a PASCAL VOC tree and as a COCO tree.

A scene is an image size and boxes given as pixel ranges: `[x0, y0, x1, y1]`
covers columns x0..x1-1 and rows y0..y1-1, drawn filled in the picture. The
VOC writer states them as 1-based inclusive corners (xmin = x0 + 1, xmax = x1),
the COCO writer as `[x0, y0, x1 - x0, y1 - y0]`.
"""

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ["cat", "dog", "fish"]


@dataclass
class Scene:
    name: str
    height: int
    width: int
    boxes: list = field(default_factory=list)  # [x0, y0, x1, y1, class index, difficult]


def random_scenes(count: int, seed: int = 0) -> list[Scene]:
    """`count` scenes of differing sizes with 1 to 4 boxes each, some difficult."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(count):
        height, width = int(rng.integers(40, 72)), int(rng.integers(40, 96))
        scene = Scene(f"img_{index:03d}", height, width)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
            x1, y1 = int(rng.integers(x0 + 4, width + 1)), int(rng.integers(y0 + 4, height + 1))
            scene.boxes.append([x0, y0, x1, y1, int(rng.integers(0, 3)), bool(rng.random() < 0.2)])
        scenes.append(scene)
    return scenes


def draw(scene: Scene) -> Image.Image:
    pixels = np.full((scene.height, scene.width, 3), 40, np.uint8)
    for x0, y0, x1, y1, label, _ in scene.boxes:
        pixels[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 80 + 60 * label
    return Image.fromarray(pixels)


def write_voc(root: Path, splits: dict[str, list[Scene]], class_names=CLASS_NAMES) -> Path:
    """Writes `splits` (split name -> scenes) as a VOC tree under `root`; returns `root`."""
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, scenes in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{scene.name}\n" for scene in scenes)
        )
        for scene in scenes:
            draw(scene).save(root / "JPEGImages" / f"{scene.name}.jpg", quality=95)
            write_voc_xml(root / "Annotations" / f"{scene.name}.xml", scene, class_names)
    return root


def write_voc_xml(path: Path, scene: Scene, class_names=CLASS_NAMES) -> None:
    annotation = ElementTree.Element("annotation")
    ElementTree.SubElement(annotation, "filename").text = f"{scene.name}.jpg"
    size = ElementTree.SubElement(annotation, "size")
    for key, value in (("width", scene.width), ("height", scene.height), ("depth", 3)):
        ElementTree.SubElement(size, key).text = str(value)
    for x0, y0, x1, y1, label, difficult in scene.boxes:
        element = ElementTree.SubElement(annotation, "object")
        ElementTree.SubElement(element, "name").text = class_names[label]
        ElementTree.SubElement(element, "difficult").text = str(int(difficult))
        box = ElementTree.SubElement(element, "bndbox")
        for key, value in zip(
            ("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1), strict=True
        ):
            ElementTree.SubElement(box, key).text = str(value)
    ElementTree.ElementTree(annotation).write(path)


def write_coco(root: Path, splits: dict[str, list[Scene]], class_names=CLASS_NAMES) -> Path:
    """Writes `splits` as a COCO tree under `root` (categories get ids 1, 2, ...)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, scenes in splits.items():
        (root / split).mkdir(exist_ok=True)
        document = coco_document(scenes, class_names)
        for scene in scenes:
            draw(scene).save(root / split / f"{scene.name}.jpg", quality=95)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
    return root


def coco_document(scenes: list[Scene], class_names=CLASS_NAMES) -> dict:
    images, annotations = [], []
    for image_id, scene in enumerate(scenes, start=7):  # ids need not start at 0 or 1
        images.append(
            {
                "id": image_id,
                "file_name": f"{scene.name}.jpg",
                "height": scene.height,
                "width": scene.width,
            }
        )
        for x0, y0, x1, y1, label, difficult in scene.boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 10 * (label + 1),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(difficult),
                }
            )
    categories = [{"id": 10 * (k + 1), "name": name} for k, name in enumerate(class_names)]
    # Listed out of id order: the reader sorts them by id.
    return {"images": images, "annotations": annotations, "categories": categories[::-1]}
