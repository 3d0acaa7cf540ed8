"""Where images to ingest come from: an image folder, a JSONL manifest, or an existing index.

Each yields JSON-safe items ``{"ref": path, "id": doc id or None, "fields": {...}}``; the
worker turns them into documents. Manifest paths are confined to root folders.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .errors import ConfigError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
ID_KEYS = ("id", "_id", "doc_id")
IMAGE_KEYS = ("image", "image_path", "path", "file", "iconic_image")


def folder_items(root: Path) -> Iterator[dict]:
    """Every file below ``root`` (sorted). A sub-folder name becomes the ``label`` field.

    Files with any name are offered (the worker sniffs the real format and records a reason
    for non-images); hidden files are skipped.
    """
    root = Path(root).resolve()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(root)
        fields = {"label": rel.parts[0]} if len(rel.parts) > 1 else {}
        yield {"ref": str(path), "id": None, "fields": fields}


def confine(path_text: str, base: Path, roots: tuple[Path, ...]) -> Path:
    """Resolve a manifest path against ``base``; refuse anything outside ``roots``."""
    if "\x00" in path_text:
        raise ConfigError(f"image path {path_text!r} contains a NUL byte")
    path = (base / path_text).resolve()
    for root in roots:
        if path == root or root in path.parents:
            return path
    raise ConfigError(f"image path {path_text!r} resolves to {path}, outside the allowed roots "
                      f"{[str(r) for r in roots]}", hint="set ESM_IMAGE_ROOTS to allow another folder")


def manifest_items(manifest: Path, roots: tuple[Path, ...] = (),
                   image_key: str | None = None) -> Iterator[dict]:
    """One item per JSONL line: ``id`` (optional), an image path, everything else as fields.

    Paths are relative to the manifest's folder; they must stay inside ``roots`` (default: the
    manifest's folder), so a manifest cannot make a worker read ``/etc/passwd`` or ``../..``.
    """
    manifest = Path(manifest).resolve()
    roots = roots or (manifest.parent,)
    with manifest.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            yield _manifest_item(line, lineno, manifest, roots, image_key)


def _manifest_item(line: str, lineno: int, manifest: Path, roots: tuple[Path, ...],
                   image_key: str | None) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{manifest.name} line {lineno}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{manifest.name} line {lineno}: expected a JSON object")
    key = image_key or next((k for k in IMAGE_KEYS if k in row), None)
    if key is None or not isinstance(row.get(key), str):
        raise ConfigError(f"{manifest.name} line {lineno}: no image path",
                          hint=f"give one of the keys {IMAGE_KEYS} (or --image-key)")
    doc_id = next((str(row[k]) for k in ID_KEYS if row.get(k) not in (None, "")), None)
    fields = {k: v for k, v in row.items() if k not in ID_KEYS and k != key}
    path = confine(row[key], manifest.parent, roots)
    return {"ref": str(path), "id": doc_id, "fields": fields}


def is_manifest(source: Path) -> bool:
    return source.is_file() and source.suffix.lower() in (".jsonl", ".ndjson", ".json")


def local_items(source: Path, roots: tuple[Path, ...] = (), image_key: str | None = None) -> list[dict]:
    source = Path(source)
    if source.is_dir():
        return list(folder_items(source))
    if is_manifest(source):
        return list(manifest_items(source, roots, image_key))
    raise ConfigError(f"{source} is neither an image folder nor a JSONL manifest",
                      hint="pass a folder of images or a .jsonl file")
