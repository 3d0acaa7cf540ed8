"""Where images to ingest come from: an image folder or a JSONL manifest.

A source is JSON-safe items ``{"ref": path, "id": doc id or None, "fields": {...}}`` for the
workers, the lines refused with a reason (recorded as failures of the job, never sent), and the
root folders the images were confined to (recorded for the index: the worker and the image
endpoint read nothing outside them).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, ImageError, PathRefused
from ..index.docfields import FieldRefused, check_fields, check_id
from ..index.fields import DocFields
from ..index.gallery import MAX_PHOTOS
from ..paths import HINT, PATH_MAX, as_roots, confine
from ..types import Failure, ImageItem, failure
from ..urlguard import is_url, parse_url

ID_KEYS = ("id", "_id", "doc_id")
IMAGE_KEYS = ("image", "image_path", "path", "file", "iconic_image")
TOP_LEVEL = DocFields.top_level()  # a manifest read without its index: the worker checks again
MAX_LINE_CHARS = 1 << 20  # a manifest line (one document's fields) of at most 1 M characters


@dataclass
class Source:
    items: list[ImageItem] = field(default_factory=list)
    refused: list[Failure] = field(default_factory=list)   # a document each
    roots: tuple[Path, ...] = ()
    photos_refused: list[Failure] = field(default_factory=list)  # photos of documents that go on

    def add(self, item: ImageItem | None, records: list[Failure]) -> None:
        """A checked document (``checked_item``): queued, or refused (its first record counts
        as the job's failure); further records are dead letters of single photos."""
        if item is None:
            self.refused.append(records[0])
            records = records[1:]
        else:
            self.items.append(item)
        self.photos_refused.extend(records)


class LineRefused(Exception):
    def __init__(self, ref: str, reason: str, message: str, doc_id: str | None = None) -> None:
        super().__init__(message)
        self.record = failure(ref, reason, message, doc_id)


def folder_items(root: Path) -> Iterator[ImageItem]:
    """Every file below ``root`` (sorted). A sub-folder name becomes the ``label`` field.

    Files with any name are offered (the worker sniffs the real format and records a reason
    for non-images); hidden files are skipped.
    """
    root = Path(root).resolve()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(root)
        fields = {"label": rel.parts[0]} if len(rel.parts) > 1 else {}
        yield {"ref": str(path), "id": None, "fields": fields}


def folder_source(root: Path) -> Source:
    """A folder named by the operator: its files, and the folder itself as the root."""
    return Source(list(folder_items(root)), [], as_roots([root]))


def manifest_source(manifest: Path, roots: tuple[Path, ...] = (), image_key: str | None = None,
                    layout: DocFields = TOP_LEVEL) -> Source:
    """One item per JSONL line: ``id`` (optional), an image path, everything else as fields.

    Paths are relative to the manifest's folder and must stay inside ``roots`` (default: the
    manifest's folder), so a manifest cannot make a worker read ``/etc/passwd`` or ``../..``.
    A line that cannot be used is refused with its reason; the other lines go on; on a
    multi-photo index a refused photo costs its line only that photo. When every line is
    refused, the manifest is not one: ConfigError naming the first line. ``layout``: the
    index's fields (fields.py), which no column may overwrite.
    """
    manifest = Path(manifest).resolve()
    source = Source(roots=as_roots(roots) or (manifest.parent,))
    with manifest.open(encoding="utf-8-sig", errors="surrogateescape") as fh:
        for lineno, line in _lines(fh):
            if line is not None and not line.strip():
                continue
            try:
                source.add(*_manifest_item(line, f"{manifest}:{lineno}", manifest.parent,
                                           source.roots, image_key, layout))
            except LineRefused as refused:
                source.refused.append(refused.record)
    if source.refused and not source.items:
        first = source.refused[0]
        raise ConfigError(f"no line of {manifest.name} can be ingested; {first['message']}",
                          hint="a manifest has one JSON object per line with an image path")
    return source


def _lines(fh) -> Iterator[tuple[int, str | None]]:
    """(line number, text) with bounded memory; None for a line over MAX_LINE_CHARS."""
    lineno = 0
    while line := fh.readline(MAX_LINE_CHARS + 1):
        lineno += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            while (rest := fh.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                pass
            line = None
        yield lineno, line


def _manifest_item(line: str | None, where: str, base: Path, roots: tuple[Path, ...],
                   image_key: str | None, layout: DocFields) -> tuple[ImageItem | None, list[Failure]]:
    name = where.rsplit("/", 1)[-1].replace(":", " line ", 1)
    if line is None:
        raise LineRefused(where, "line_too_long", f"{name}: longer than {MAX_LINE_CHARS} characters")
    row = _parse(line, where, name)
    key = image_key or next((k for k in IMAGE_KEYS if k in row), None)
    if key is None or not isinstance(row.get(key), (str, list)):
        raise LineRefused(where, "no_image_path", f"{name}: no image path (give one of the keys "
                          f"{', '.join(IMAGE_KEYS)}, or --image-key)")
    try:
        doc_id = next((check_id(row[k]) for k in ID_KEYS if row.get(k) not in (None, "")), None)
    except FieldRefused as exc:
        raise LineRefused(_ref_of(row[key], base, where), exc.reason, f"{name}: {exc.message}") from None
    try:
        fields = check_fields({k: v for k, v in row.items() if k not in ID_KEYS and k != key}, layout)
    except FieldRefused as exc:
        raise LineRefused(_ref_of(row[key], base, where), exc.reason, f"{name}: {exc.message}",
                          doc_id) from None
    return checked_item(row[key], doc_id, fields, base, roots, multi=bool(layout.photos),
                        where=where, label=name)


def image_refs(value: object, base: Path, roots: tuple[Path, ...],
               hint: str = HINT) -> tuple[list[str], list[tuple[object, PathRefused | ImageError]]]:
    """(the usable photos an image field names, each refused one with its error). The field is
    a path or http(s) URL, or a list of them; paths are confined to ``roots``; URLs are checked
    for scheme and user info here, and for the address they reach by the worker that fetches
    them. PathRefused when the value names no photo at all, or too many."""
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > MAX_PHOTOS:
        raise PathRefused(f"an image list needs 1 to {MAX_PHOTOS} paths or URLs, not {len(values)}",
                          hint="give a path, a URL, or a list of them")
    refs, refused = [], []
    for ref in values:
        try:
            refs.append(parse_url(ref).url if is_url(ref) else str(confine(ref, base, roots, hint=hint)))
        except (PathRefused, ImageError) as exc:
            refused.append((ref, exc))
    return list(dict.fromkeys(refs)), refused


def checked_item(value: object, doc_id: str | None, fields: dict, base: Path, roots: tuple[Path, ...],
                 *, multi: bool, where: str, label: str,
                 hint: str = HINT) -> tuple[ImageItem | None, list[Failure]]:
    """(task item or None, failure records) for a document whose image field is ``value``.
    Each refused photo is a record under its own reference with its own reason. On a
    multi-photo index (``multi``) the document goes on with the photos left; otherwise, or
    when none is left, it is refused (its first record says why). ``where``: the reference of
    a record when a photo names nothing usable; ``label``: how messages name the document."""
    try:
        refs, refused = image_refs(value, base, roots, hint)
    except PathRefused as exc:
        refs, refused = [], [(value, exc)]
    records = [failure(_ref_of(ref, base, where), exc.reason, f"{label}: {exc}", doc_id) for ref, exc in refused]
    if records and (not refs or not multi):
        return None, records
    return source_item(refs, doc_id, fields, several=isinstance(value, list)), records


def source_item(refs: list[str], doc_id: str | None, fields: dict, several: bool) -> ImageItem:
    """A task item: its first photo as ``ref`` (what progress and dead letters key on) and,
    for a list, every photo in ``refs``."""
    item: ImageItem = {"ref": refs[0], "id": doc_id, "fields": fields}
    if several:
        item["refs"] = refs
    return item


def _parse(line: str, where: str, name: str) -> dict:
    """The line's JSON object; refused unless it is one, in UTF-8, without NaN/Infinity."""
    try:
        row = json.loads(line)
        json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise LineRefused(where, "bad_line", f"{name}: not JSON ({exc.msg})") from None
    except UnicodeError:
        raise LineRefused(where, "bad_line", f"{name}: not valid UTF-8 text") from None
    except RecursionError:
        raise LineRefused(where, "bad_line", f"{name}: nested too deeply") from None
    except ValueError:  # NaN, Infinity, 1e999
        raise LineRefused(where, "bad_line", f"{name}: NaN and Infinity are not JSON values") from None
    if not isinstance(row, dict):
        raise LineRefused(where, "bad_line", f"{name}: expected a JSON object")
    return row


def _ref_of(path_text: object, base: Path, where: str) -> str:
    """The image a refused path names (so a later success clears the record), else the line."""
    if isinstance(path_text, list) and path_text:
        path_text = path_text[0]
    if not isinstance(path_text, str) or "\x00" in path_text or len(path_text) > PATH_MAX:
        return where
    if is_url(path_text):
        return path_text
    return os.path.normpath(Path(base) / path_text)


def is_manifest(source: Path) -> bool:
    return source.is_file() and source.suffix.lower() in (".jsonl", ".ndjson", ".json")


def local_source(source: Path, roots: tuple[Path, ...] = (), image_key: str | None = None,
                 layout: DocFields = TOP_LEVEL) -> Source:
    source = Path(source)
    if source.is_dir():
        return folder_source(source)
    if is_manifest(source):
        return manifest_source(source, roots, image_key, layout)
    raise ConfigError(f"{source} is neither an image folder nor a JSONL manifest",
                      hint="pass a folder of images or a .jsonl file")
