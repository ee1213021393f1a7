"""Publishing an export: version numbers, names the export root reserves, stale staging folders."""

import pytest

from byol_keras.errors import UsageError
from byol_keras.export.publish import check_request, existing_versions


def test_only_ascii_digit_folders_and_files_are_versions(tmp_path):
    # str.isdigit and \d accept superscripts and other scripts' digits; TF Serving and int do not.
    model = tmp_path / "byol_backbone"
    for folder in ("1", "3", "²", "١٢", "7a", "assets"):
        (model / folder).mkdir(parents=True)
    (tmp_path / "onnx").mkdir()
    for file in ("byol_backbone-v5.onnx", "byol_backbone-v٣.onnx", "byol_backbone-v²6.onnx"):
        (tmp_path / "onnx" / file).write_bytes(b"")
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "byol_backbone-v８.json").write_text("{}")  # a fullwidth 8
    assert existing_versions(tmp_path, "byol_backbone") == {1, 3, 5}


@pytest.mark.parametrize("name", ["manifest.json", "manifests", "onnx", "Manifest.JSON", "ONNX"])
def test_names_of_the_export_roots_own_entries_are_refused_before_anything_is_written(
    tmp_path, name
):
    # Case-insensitively: on macOS's file system "ONNX" is the onnx/ folder.
    output = tmp_path / "export"
    with pytest.raises(UsageError, match=f"--name: '{name}' is reserved"):
        check_request(("saved_model",), output, name, None, 17)
    assert not output.exists()


def test_a_name_too_long_for_its_files_is_refused(tmp_path):
    # ".staging-<name>-v<version>-XXXXXXXX" must stay within a file name's 255 bytes.
    with pytest.raises(UsageError, match="--name: .* is not a model name"):
        check_request(("saved_model",), tmp_path, "m" * 241, None, 17)
    assert check_request(("saved_model",), tmp_path, "m" * 200, None, 17).version == 1


def test_export_root_entries_of_the_wrong_kind_are_refused_up_front(tmp_path):
    # What an export named "manifest.json" left before names were checked: every later
    # export failed after its work, writing the root manifest over that folder.
    (tmp_path / "manifest.json" / "1").mkdir(parents=True)
    with pytest.raises(UsageError, match="manifest.json' is a folder, not a file; move it away"):
        check_request(("saved_model",), tmp_path, "byol_backbone", None, 17)
    (tmp_path / "manifest.json" / "1").rmdir()
    (tmp_path / "manifest.json").rmdir()
    (tmp_path / "byol_backbone").write_text("notes")
    with pytest.raises(UsageError, match="byol_backbone' is a file, not a folder; move it away"):
        check_request(("saved_model",), tmp_path, "byol_backbone", None, 17)
