import json

import pytest

from es_metric.errors import ConfigError
from es_metric.ingest.sources import MAX_LINE_CHARS, folder_items, local_source, manifest_source


def test_folder_items_label_from_subfolder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / "top.png").write_bytes(b"2")
    (tmp_path / ".hidden").write_bytes(b"3")
    items = list(folder_items(tmp_path))
    assert [(i["ref"].rsplit("/", 1)[1], i["fields"]) for i in items] == [("x.jpg", {"label": "a"}),
                                                                          ("top.png", {})]
    assert local_source(tmp_path).roots == (tmp_path.resolve(),)


def test_manifest_items_ids_fields_and_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": 7, "image": "img/a.jpg", "title": "red dress"}) + "\n\n")
    source = manifest_source(m)
    assert source.items == [{"ref": str(tmp_path / "img" / "a.jpg"), "id": "7",
                             "fields": {"title": "red dress"}}]
    assert source.refused == [] and source.roots == (tmp_path.resolve(),)


def _refusals(tmp_path, *rows) -> dict[int, tuple[str, str]]:
    """{line number: (reason, message)} of the refused lines; a good line keeps the manifest valid."""
    m = tmp_path / "m.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows] + ['{"image": "ok.jpg"}']
    m.write_text("\n".join(lines) + "\n")
    source = manifest_source(m)
    assert [i["ref"] for i in source.items] == [str(tmp_path / "ok.jpg")]
    return {int(r["message"].split(" line ")[1].split(":")[0]): (r["reason"], r["message"])
            for r in source.refused}


@pytest.mark.parametrize("path", ["../secret.jpg", "/etc/passwd", "img/../../x.jpg"])
def test_manifest_paths_cannot_escape_roots(tmp_path, path):
    [(reason, message)] = _refusals(tmp_path, {"image": path}).values()
    assert reason == "path_refused" and "outside the allowed roots" in message
    assert "ESM_IMAGE_ROOTS" in message


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    (tmp_path / "link.jpg").symlink_to("/etc/passwd")
    assert _refusals(tmp_path, {"image": "link.jpg"})[1][0] == "path_refused"


@pytest.mark.parametrize("key", ["_index", "_id_", "_source", "_routing", "_version", "_op_type",
                                 "image_sha256", "model_id", "indexed_at", "image_vector",
                                 "model_id.x"])
def test_metadata_and_bookkeeping_keys_refuse_the_line(tmp_path, key):
    [(reason, message)] = _refusals(tmp_path, {"image": "a.jpg", key: "x"}).values()
    assert reason == "reserved_field" and repr(key) in message and "line 1" in message


def test_plain_names_of_bulk_parameters_are_ordinary_fields(tmp_path):
    m = tmp_path / "m.jsonl"
    row = {"image": "a.jpg", "routing": "r", "version": 3, "version_type": "external", "parent": "p"}
    m.write_text(json.dumps(row) + "\n")
    [item] = manifest_source(m).items
    assert item["fields"] == {"routing": "r", "version": 3, "version_type": "external", "parent": "p"}


def test_bad_lines_are_refused_one_by_one_with_reasons(tmp_path):
    got = _refusals(tmp_path, "not json", "[1, 2]", '{"image": "a.jpg", "x": NaN}', '{"title": "no path"}',
                    {"image": "a.jpg", "id": "x" * 513}, {"image": "a.jpg", "id": {"a": 1}},
                    '{"image": "a.jpg", "t": "\\ud800"}', "[" * 100_000,
                    {"image": "bad\x00.jpg"}, {"image": "a" * 100_000})
    reasons = {n: reason for n, (reason, _) in got.items()}
    assert reasons == {1: "bad_line", 2: "bad_line", 3: "bad_line", 4: "no_image_path", 5: "bad_id",
                       6: "bad_id", 7: "bad_line", 8: "bad_line", 9: "path_refused",
                       10: "path_refused"}


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"image": "a.jpg", "blob": "x" * (MAX_LINE_CHARS + 10)}) + "\n"
                 + json.dumps({"image": "b.jpg"}) + "\n")
    source = manifest_source(m)
    assert [r["reason"] for r in source.refused] == ["line_too_long"]
    assert [i["ref"] for i in source.items] == [str(tmp_path / "b.jpg")]


def test_a_manifest_of_nothing_usable_is_one_clear_error(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"image": "a.jpg"}\nnot json\n'.replace('{"image": "a.jpg"}', "also not json"))
    with pytest.raises(ConfigError, match="line 1: not JSON"):
        manifest_source(m)
    with pytest.raises(ConfigError, match="neither an image folder"):
        local_source(tmp_path / "nothing.txt")


def test_a_refused_photo_costs_a_gallery_only_that_photo(tmp_path):
    from es_metric.index.fields import DocFields

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "p1", "image": ["a.jpg", "../out.jpg", "b.jpg"]}) + "\n"
                 + json.dumps({"id": "p2", "image": ["/etc/passwd", "../x.jpg"]}) + "\n")
    gallery = manifest_source(m, layout=DocFields.top_level("photos.vector", "photos"))
    [item] = gallery.items
    assert item["refs"] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")] and item["id"] == "p1"
    named = {(r["doc_id"], r["ref"]): r["reason"] for r in gallery.refused + gallery.photos_refused}
    assert named == {("p1", str(tmp_path.parent / "out.jpg")): "path_refused",
                     ("p2", "/etc/passwd"): "path_refused", ("p2", str(tmp_path.parent / "x.jpg")): "path_refused"}
    assert [r["ref"] for r in gallery.refused] == ["/etc/passwd"]   # p2: one document failed
    m.write_text(m.read_text() + json.dumps({"id": "p3", "image": "a.jpg"}) + "\n")
    single = manifest_source(m)   # one vector per document: a line with a refused photo is refused
    assert [i["id"] for i in single.items] == ["p3"]
    assert [(r["doc_id"], r["ref"]) for r in single.refused] == [
        ("p1", str(tmp_path.parent / "out.jpg")), ("p2", "/etc/passwd")]    # named by the bad photo
