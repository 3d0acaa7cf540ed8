import json

import pytest

from es_metric.errors import ConfigError
from es_metric.sources import folder_items, local_items, manifest_items


def test_folder_items_label_from_subfolder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / "top.png").write_bytes(b"2")
    (tmp_path / ".hidden").write_bytes(b"3")
    items = list(folder_items(tmp_path))
    assert [(i["ref"].rsplit("/", 1)[1], i["fields"]) for i in items] == [("x.jpg", {"label": "a"}),
                                                                          ("top.png", {})]


def test_manifest_items_ids_fields_and_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": 7, "image": "img/a.jpg", "title": "red dress"}) + "\n\n")
    [item] = manifest_items(m)
    assert item == {"ref": str(tmp_path / "img" / "a.jpg"), "id": "7", "fields": {"title": "red dress"}}


@pytest.mark.parametrize("path", ["../secret.jpg", "/etc/passwd", "img/../../x.jpg"])
def test_manifest_paths_cannot_escape_roots(tmp_path, path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"image": path}) + "\n")
    with pytest.raises(ConfigError, match="outside the allowed roots"):
        list(manifest_items(m))


def test_manifest_errors_name_the_line(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"image": "a.jpg"}\nnot json\n')
    with pytest.raises(ConfigError, match="line 2"):
        list(manifest_items(m))
    with pytest.raises(ConfigError, match="neither an image folder"):
        local_items(tmp_path / "nothing.txt")
