"""voc: and coco: box sources: coordinates, agreement of the two formats, bad input."""

import json
import logging
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from byol_keras.data import load_source
from byol_keras.data.box_sources import load_box_split
from byol_keras.data.coco import load_coco
from byol_keras.data.image_files import pillow_decode
from byol_keras.data.voc import load_voc, voc_box
from byol_keras.errors import UsageError
from tests.helpers.boxes import CLASS_NAMES, Scene, draw, random_scenes, write_coco, write_voc
from tests.helpers.exif import save_turned_jpeg


def test_voc_corners_are_read_as_the_devkit_reads_them(tmp_path):
    # By hand: VOC's pixels 1..10 are 10 pixels, 0-based columns 0..9, end 10.
    assert voc_box(1, 1, 10, 20) == [0.0, 0.0, 10.0, 20.0]
    scene = Scene("one", 30, 40, [[4, 2, 14, 8, 1, False]])  # xmin 5, ymin 3, xmax 14, ymax 8
    split = load_voc(str(write_voc(tmp_path, {"train": [scene]})), "train")
    np.testing.assert_array_equal(split.boxes[0], [[4.0, 2.0, 14.0, 8.0]])
    assert split.boxes[0].dtype == np.float32 and split.classes[0].dtype == np.int32
    assert split.class_names == ["dog"] and split.classes[0].tolist() == [0]
    xml = (tmp_path / "Annotations" / "one.xml").read_text()
    assert "<xmin>5</xmin>" in xml and "<xmax>14</xmax>" in xml
    assert split.sizes.tolist() == [[30, 40]]


def test_the_same_scenes_as_voc_and_coco_give_the_same_boxes(tmp_path):
    scenes = random_scenes(9, seed=1)
    splits = {"train": scenes[:5], "val": scenes[5:]}
    voc = load_voc(str(write_voc(tmp_path / "voc", splits)), "train+val")
    coco = load_coco(str(write_coco(tmp_path / "coco", splits)), "train+val")
    assert voc.class_names == coco.class_names == CLASS_NAMES
    assert voc.names == [s.name for s in scenes]
    assert coco.names == [f"{s.name}.jpg" for s in scenes]
    for split in (voc, coco):
        assert split.skipped_files == split.skipped_boxes == split.clipped_boxes == 0
        assert split.sizes.tolist() == [[s.height, s.width] for s in scenes]
        for index, scene in enumerate(scenes):
            expected = np.array([b[:4] for b in scene.boxes], np.float32)
            np.testing.assert_array_equal(split.boxes[index], expected)
            assert split.classes[index].tolist() == [b[4] for b in scene.boxes]
            assert split.difficult[index].tolist() == [b[5] for b in scene.boxes]


def test_class_names_come_from_every_split_so_all_splits_share_one_index(tmp_path):
    train = [Scene("a", 32, 32, [[0, 0, 8, 8, 0, False], [8, 8, 16, 16, 2, False]])]
    test = [Scene("b", 32, 32, [[0, 0, 8, 8, 2, False]])]
    root = write_voc(tmp_path, {"train": train, "test": test})
    split = load_voc(str(root), "test")
    assert split.class_names == ["cat", "fish"] and split.classes[0].tolist() == [1]


def test_joined_coco_splits_with_their_own_category_ids_share_classes_by_name(tmp_path):
    train = [Scene("a", 32, 32, [[0, 0, 8, 8, 0, False], [8, 8, 16, 16, 1, False]])]
    val = [Scene("b", 32, 32, [[0, 0, 8, 8, 0, False]])]
    root = write_coco(tmp_path, {"train": train}, ["cat", "dog"])  # ids 10: cat, 20: dog
    write_coco(root, {"val": val}, ["dog"])  # its own id 10: dog
    joined = load_coco(str(root), "train+val")
    assert joined.class_names == ["cat", "dog"]
    assert [classes.tolist() for classes in joined.classes] == [[0, 1], [1]]


def _portrait(root, write, declared=None):
    """The issue's photo: stored 80 wide and 40 high with orientation 6, boxed as shown, 40 x 80.

    `declared` (width, height) overrides the size the annotation states.
    """
    scene = Scene("portrait", 80, 40, [[5, 50, 30, 75, 0, False]])  # below row 40: lost if unturned
    write(root, {"train": [scene, Scene("upright", 40, 60, [[2, 2, 20, 20, 1, False]])]})
    image = next(root.rglob("portrait.jpg"))
    save_turned_jpeg(image, np.asarray(draw(scene)), orientation=6)
    if declared and write is write_voc:
        xml = root / "Annotations" / "portrait.xml"
        text = xml.read_text().replace("<width>40</width>", f"<width>{declared[0]}</width>")
        xml.write_text(text.replace("<height>80</height>", f"<height>{declared[1]}</height>"))
    elif declared:
        path = root / "annotations" / "instances_train.json"
        document = json.loads(path.read_text())
        document["images"][0].update(width=declared[0], height=declared[1])
        path.write_text(json.dumps(document))
    return image


@pytest.mark.parametrize("kind, write", [("voc", write_voc), ("coco", write_coco)])
def test_boxes_on_a_photo_that_exif_turns_are_read_in_its_displayed_frame(tmp_path, kind, write):
    image = _portrait(tmp_path, write)
    split = load_box_split(f"{kind}:{tmp_path}", "train")
    assert (split.skipped_files, split.skipped_boxes, split.clipped_boxes) == (0, 0, 0)
    assert split.sizes.tolist() == [[80, 40], [40, 60]]
    np.testing.assert_array_equal(split.boxes[0], [[5.0, 50.0, 30.0, 75.0]])
    pixels = pillow_decode(str(image))  # the decoder of --protocol detect and its export
    assert pixels.shape == (80, 40, 3)
    # draw() fills a box of class 0 with grey 80 on a background of 40.
    assert abs(pixels[52:73, 7:28].mean() - 80) < 4 and abs(pixels[5:45].mean() - 40) < 4


@pytest.mark.parametrize("kind, write", [("voc", write_voc), ("coco", write_coco)])
@pytest.mark.parametrize("declared", [(80, 40), (41, 80)])  # the stored frame; a wrong width
def test_an_image_whose_declared_size_is_not_its_displayed_size_is_skipped(
    tmp_path, kind, write, declared, caplog
):
    _portrait(tmp_path, write, declared)
    with caplog.at_level(logging.WARNING):
        split = load_box_split(f"{kind}:{tmp_path}", "train")
    assert split.names[0].startswith("upright") and (len(split), split.skipped_files) == (1, 1)
    assert "1 declared size differs from the image as displayed (EXIF orientation applied)" in (
        caplog.text
    )


def _broken_voc(root):
    """A VOC tree with one good image and one of each kind of bad input."""
    scenes = [
        Scene("good", 40, 60, [[2, 2, 20, 20, 0, False]]),
        Scene("degenerate", 40, 60, [[2, 2, 20, 20, 0, False], [10, 10, 10, 30, 1, False]]),
        Scene("outside", 40, 60, [[2, 2, 20, 20, 1, False], [70, 5, 90, 20, 0, False]]),
        Scene("partly", 40, 60, [[50, 30, 75, 52, 2, False]]),
        Scene("broken_xml", 40, 60, [[2, 2, 20, 20, 0, False]]),
        Scene("no_image", 40, 60, [[2, 2, 20, 20, 0, False]]),
        Scene("bad_image", 40, 60, [[2, 2, 20, 20, 0, False]]),
    ]
    write_voc(root, {"train": scenes})
    (root / "Annotations" / "broken_xml.xml").write_text("<annotation><object><name>cat")
    (root / "JPEGImages" / "no_image.jpg").unlink()
    (root / "JPEGImages" / "bad_image.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    return root


def test_bad_voc_input_is_skipped_counted_and_logged_once(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        split = load_voc(str(_broken_voc(tmp_path)), "train")
    assert split.names == ["good", "degenerate", "outside", "partly"]
    assert (split.skipped_files, split.skipped_boxes, split.clipped_boxes) == (3, 2, 1)
    assert [len(b) for b in split.boxes] == [1, 1, 1, 1]
    # Degenerate: xmax 10 <= xmin 11 in the file; outside: starts at x 70 in a 60-wide image.
    np.testing.assert_array_equal(split.boxes[3], [[50.0, 30.0, 60.0, 40.0]])  # clipped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one line for the images, one for the boxes
    assert "skipped 3 of 7 images" in warnings[0] and "no image in JPEGImages" in warnings[0]
    assert "unparsable XML" in warnings[0] and "bad_image" in warnings[0]
    assert "1 degenerate" in warnings[1] and "1 entirely outside the image" in warnings[1]
    assert "(7 images" not in split.description and "3 images and 2 boxes skipped" in (
        split.description
    )


def test_bad_coco_entries_are_skipped_and_counted(tmp_path):
    scenes = [
        Scene("good", 40, 60, [[2, 2, 20, 20, 0, False]]),
        Scene("partly", 40, 60, [[50, 30, 75, 52, 2, True]]),
        Scene("missing", 40, 60, [[2, 2, 20, 20, 0, False]]),
    ]
    root = write_coco(tmp_path, {"val": scenes})
    (root / "val" / "missing.jpg").unlink()
    path = root / "annotations" / "instances_val.json"
    document = json.loads(path.read_text())
    good_id = document["images"][0]["id"]
    document["images"].append({"id": 99})  # no file_name
    document["images"].append({"id": 98, "file_name": "../escape.jpg"})
    document["annotations"] += [
        {"image_id": good_id, "category_id": 10, "bbox": "12 3 4 5"},
        {"image_id": good_id, "category_id": 10, "bbox": [5, 5, 0, 9]},  # degenerate
        {"image_id": good_id, "category_id": 10, "bbox": [-30, 5, 10, 9]},  # outside
        {"image_id": 12345, "category_id": 10, "bbox": [5, 5, 9, 9]},  # no such image
        "not an annotation",
    ]
    path.write_text(json.dumps(document))
    split = load_coco(str(root), "val")
    assert split.names == ["good.jpg", "partly.jpg"]
    assert (split.skipped_files, split.skipped_boxes, split.clipped_boxes) == (3, 5, 1)
    np.testing.assert_array_equal(split.boxes[1], [[50.0, 30.0, 60.0, 40.0]])
    assert split.difficult[1].tolist() == [True]  # iscrowd kept, flagged


def test_coco_iscrowd_is_read_strictly(tmp_path):
    scene = Scene("a", 40, 60, [[2, 2, 20, 20, 0, False]])
    root = write_coco(tmp_path, {"val": [scene]})
    path = root / "annotations" / "instances_val.json"
    document = json.loads(path.read_text())
    box = document["annotations"][0]
    values = [0, 1, None, "0", "1", True, 0.0, 2]  # None: no iscrowd key, which means 0
    document["annotations"] = [
        {key: v for key, v in {**box, "iscrowd": value}.items() if v is not None}
        for value in values
    ]
    path.write_text(json.dumps(document))
    split = load_coco(str(root), "val")
    assert split.difficult[0].tolist() == [False, True, False]  # 0, 1 and no key
    assert split.skipped_boxes == 5  # "0", "1", true, 0.0 and 2 are not COCO's 0 or 1


def test_coco_images_may_be_links_but_names_may_not_leave_the_split_folder(tmp_path):
    """As git-annex and DVC check out: the split folder holds links into a store elsewhere."""
    scenes = random_scenes(3, seed=4)
    root = write_coco(tmp_path / "coco", {"val": scenes})
    store = tmp_path / "annex" / "objects"
    store.mkdir(parents=True)
    for scene in scenes:
        image = root / "val" / f"{scene.name}.jpg"
        image.rename(store / image.name)
        image.symlink_to(store / image.name)
    path = root / "annotations" / "instances_val.json"
    document = json.loads(path.read_text())
    document["images"] += [
        {"id": 98, "file_name": "../../annex/objects/img_000.jpg"},
        {"id": 99, "file_name": str(store / "img_001.jpg")},
    ]
    path.write_text(json.dumps(document))
    split = load_coco(str(root), "val")
    assert split.names == [f"{scene.name}.jpg" for scene in scenes]
    assert split.skipped_files == 2  # the two names that leave val/, though their files exist
    assert split.sizes.tolist() == [[scene.height, scene.width] for scene in scenes]


def test_voc_and_coco_serve_pretraining_as_unlabelled_images(tmp_path):
    scenes = random_scenes(4, seed=2)
    write_voc(tmp_path / "voc", {"train": scenes[:3], "val": scenes[3:]})
    write_coco(tmp_path / "coco", {"train": scenes[:3], "val": scenes[3:]})
    for spec in (f"voc:{tmp_path / 'voc'}", f"coco:{tmp_path / 'coco'}"):
        source = load_source(spec, split="train+val", image_size=24)
        assert source.num_examples == 4 and not source.has_labels
        examples = list(source.dataset)
        assert len(examples) == 4 and {int(label) for _, label in examples} == {-1}
        # The photos keep their own size: pretraining crops its views from them.
        assert source.image_size is None
        shapes = sorted(tuple(image.shape) for image, _ in examples)
        assert shapes == sorted((scene.height, scene.width, 3) for scene in scenes)
        assert examples[0][0].dtype.name == "uint8"


@pytest.mark.parametrize(
    "case, message",
    [
        ("voc_missing", "does not exist"),
        ("voc_no_split", "has no ImageSets/Main/test.txt (splits: train)"),
        ("voc_empty_split", "lists no image ids"),
        ("voc_id_outside", "lists the image id '../../outside/secret', which reaches outside"),
        ("voc_id_absolute", "which reaches outside the VOC tree"),
        ("coco_missing", "does not exist"),
        ("coco_no_split", "has no annotations/instances_test.json (splits: train)"),
        ("coco_bad_json", "cannot read"),
        ("coco_not_instances", "is not COCO instances JSON"),
        ("coco_unknown_category", "category_id 77, which is not among its categories"),
        ("coco_repeated_name", "declares the category name 'cat' under more than one id"),
        ("coco_file_twice", "lists the file 'a.jpg' under two image ids, 7 and 8"),
        ("coco_empty_split", "lists no images"),
        ("bad_spec", "expected voc:<path> or coco:<path>"),
    ],
)
def test_unusable_data_sets_are_one_line_usage_errors(tmp_path, case, message):
    scenes = [Scene("a", 32, 32, [[0, 0, 8, 8, 0, False]])]
    voc, coco = write_voc(tmp_path / "voc", {"train": scenes}), tmp_path / "coco"
    write_coco(coco, {"train": scenes})
    instances = coco / "annotations" / "instances_train.json"
    split, spec = "train", f"coco:{coco}"
    if case.startswith("voc"):
        spec = f"voc:{voc}"
    if case.endswith("missing"):
        spec += "/nowhere"
    elif case.endswith("no_split"):
        split = "test"
    elif case == "voc_empty_split":
        (voc / "ImageSets" / "Main" / "train.txt").write_text("\n")
    elif case.startswith("voc_id"):  # the image and XML exist: only the id's name can tell
        secret = "../../outside/secret" if case == "voc_id_outside" else f"{tmp_path}/secret"
        outside = (voc / "JPEGImages" / secret).resolve()
        outside.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(voc / "JPEGImages" / "a.jpg", outside.with_suffix(".jpg"))
        shutil.copy(
            voc / "Annotations" / "a.xml",
            (voc / "Annotations" / secret).resolve().with_suffix(".xml"),
        )
        (voc / "ImageSets" / "Main" / "train.txt").write_text(f"a\n{secret}\n")
    elif case == "coco_bad_json":
        instances.write_text('{"images": [')
    elif case == "coco_not_instances":
        instances.write_text("[1, 2]")
    elif case == "coco_unknown_category":
        document = json.loads(instances.read_text())
        document["annotations"][0]["category_id"] = 77
        instances.write_text(json.dumps(document))
    elif case == "coco_repeated_name":
        document = json.loads(instances.read_text())
        document["categories"].append({"id": 99, "name": "cat"})
        instances.write_text(json.dumps(document))
    elif case == "coco_file_twice":
        document = json.loads(instances.read_text())
        document["images"].append({**document["images"][0], "id": 8})
        instances.write_text(json.dumps(document))
    elif case == "coco_empty_split":
        document = json.loads(instances.read_text())
        instances.write_text(json.dumps({**document, "images": [], "annotations": []}))
    elif case == "bad_spec":
        spec = f"pascal:{voc}"
    with pytest.raises(UsageError, match="^[^\n]*$") as raised:
        load_box_split(spec, split)
    assert message in str(raised.value)


@pytest.mark.slow
@pytest.mark.data
def test_real_bccd_reads_with_its_two_degenerate_boxes_skipped(shared_data, tmp_path):
    archive = shared_data / "bccd-voc.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent: real-data test skipped")
    if shutil.which("tar"):
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(tmp_path)], check=True)
    else:
        with tarfile.open(archive) as bundle:
            bundle.extractall(tmp_path, filter="data")
    root = f"voc:{tmp_path / 'bccd'}"
    splits = {name: load_box_split(root, name) for name in ("train", "val", "test", "train+val")}
    assert [len(splits[n]) for n in ("train", "val", "test", "train+val")] == [205, 87, 72, 292]
    for split in splits.values():
        assert split.class_names == ["Platelets", "RBC", "WBC"] and split.skipped_files == 0
        assert split.sizes.tolist() == [[480, 640]] * len(split)
    # The README's counts: 4,888 boxes, two of them degenerate (one in train, one in val).
    assert sum(splits[n].num_boxes for n in ("train", "val", "test")) == 4888 - 2
    assert [splits[n].skipped_boxes for n in ("train", "val", "test")] == [1, 1, 0]
    every = [splits["train+val"], splits["test"]]
    classes = np.concatenate([labels for split in every for labels in split.classes])
    assert np.bincount(classes, minlength=3).tolist() == [361, 4155 - 2, 372]  # both were RBC
    boxes = np.concatenate([b for split in every for b in split.boxes])
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 480


def test_the_cli_exits_2_with_one_line_for_an_unusable_data_set(tmp_path, capsys):
    from byol_keras import cli

    scenes = [Scene("a", 32, 32, [[0, 0, 8, 8, 0, False]])]
    coco = write_coco(tmp_path / "coco", {"train": scenes})
    instances = coco / "annotations" / "instances_train.json"
    document = json.loads(instances.read_text())
    document["annotations"][0]["category_id"] = 3
    instances.write_text(json.dumps(document))
    for spec, message in (
        (f"voc:{tmp_path / 'nowhere'}", "does not exist"),
        (f"coco:{coco}", "has category_id 3, which is not among its categories"),
    ):
        code = cli.main(
            ["train", "--output", str(tmp_path / "run"), "--set", f"data.source={spec}"]
        )
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], lines
