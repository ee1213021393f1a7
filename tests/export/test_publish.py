"""Publishing an export: version numbers, names the export root reserves, stale staging folders."""

from byol_keras.export.publish import existing_versions


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
