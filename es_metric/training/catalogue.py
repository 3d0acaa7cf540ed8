"""A shop's catalogue as training data: products are the labels, their photos the positives.

Three sources give the same thing (products, each with its photos and, with ``group_field``,
a group such as a category):

* a class folder: a product per sub-folder (``DATA_DIR/<product>/<photo>``);
* a catalogue JSONL: the manifest ``esm ingest`` reads, a line per product with ``id``,
  ``image`` (a path/URL or a list of them) and other fields. It is read by ingest's own manifest
  reader, so paths are confined to the same roots and hostile lines refused the same way;
* an index es-metric ingested (``--from-index``): its documents' photos (a multi-photo index:
  a document is a product; a one-vector index: a document is a photo, and documents sharing
  ``product_field`` are one product).

Photos given as URLs are fetched under the workers' guard (``ingest.fetch``) into the cache
(``$ESM_CACHE_DIR/photos``), by content, once. Every photo is then checked like a class folder's
(``imagecheck``): unusable ones are skipped with one warning, and the card lists them.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..config import Settings
from ..errors import ConfigError, ImageError, PathRefused, shown
from ..progressbar import progress_iter
from ..ingest.sources import manifest_source
from ..urlguard import is_url
from .data import Sample, cache_dir, read_folder
from .imagecheck import Unusable, check_images, summary
from .products import Product, dotted, group_value, pick_group_field

log = logging.getLogger(__name__)

__all__ = ["Catalogue", "Product", "read_catalogue", "group_value"]

@dataclass
class Catalogue:
    """Usable samples (label = product number, ``cls`` = product id), each product's group,
    and what was left out: photos that cannot be used, lines or documents refused."""

    source: str
    samples: list[Sample]
    groups: dict[str, str] = field(default_factory=dict)
    skipped: list[Unusable] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    root: Path | None = None
    group_field: str | None = None   # the field the groups came from

    def skipped_records(self) -> list[dict]:
        return [u.as_dict(self.root) for u in self.skipped] + self.refused

    @property
    def n_products(self) -> int:
        return len({s.cls for s in self.samples})


def read_catalogue(data: str | Path | None, settings: Settings, *, group_field: str | None = None,
                   from_index: str | None = None, product_field: str | None = None) -> Catalogue:
    """The catalogue of DATA (a class folder or a catalogue JSONL) or of an index."""
    if from_index:
        from .index_catalogue import index_products
        products, refused, chosen = index_products(from_index, settings, group_field, product_field)
        return _assemble(f"index {from_index}", products, refused, settings, None, chosen)
    path = Path(data or "")
    if path.is_dir():
        return _from_folder(path, group_field)
    if path.is_file():
        src = manifest_source(path, settings.image_roots)
        chosen = pick_group_field([item.get("fields") or {} for item in src.items], group_field)
        return _assemble(str(path), _manifest_products(src.items, chosen), src.refused,
                         settings, path.parent, chosen)
    raise ConfigError(f"{shown(str(path))} is neither a class folder nor a catalogue JSONL",
                      hint="give a folder with a sub-folder per product, a .jsonl catalogue "
                           "(a line per product: id, image, fields), or --from-index INDEX")


def _from_folder(root: Path, group_field: str | None) -> Catalogue:
    if group_field not in (None, "", "auto", "none"):
        raise ConfigError("--group-field needs a catalogue JSONL or --from-index",
                          hint="a class folder has no fields: give the catalogue as JSONL")
    folder = read_folder(root, min_per_class=1)
    return Catalogue(str(root), folder.samples, {}, folder.skipped, [], folder.root)


def _manifest_products(items: Iterable[dict], group_field: str | None) -> Iterator[Product]:
    for item in items:
        refs = tuple(item.get("refs") or [item["ref"]])
        pid = item.get("id") or refs[0]
        group = group_value(dotted(item.get("fields") or {}, group_field)) if group_field else None
        yield Product(str(pid), refs, group)


def _assemble(source: str, products: Iterable[Product], refused: list[dict], settings: Settings,
              root: Path | None, group_field: str | None) -> Catalogue:
    """Local files for every photo (URLs fetched), checked; samples numbered by product."""
    merged: dict[str, Product] = {}
    for p in products:  # the same id twice (two lines): one product with both lines' photos
        old = merged.get(p.id)
        merged[p.id] = p if old is None else Product(p.id, old.photos + p.photos, old.group or p.group)
    local, failed = _localise(merged.values(), settings)
    paths = sorted({path for photos in local.values() for path in photos})
    skipped = failed + check_images(paths, cache_dir("checks") / "images.json")
    if skipped:
        log.warning(summary(skipped, len(paths) + len(failed), root or Path("/")))
    bad = {u.path for u in skipped}
    samples: list[Sample] = []
    groups: dict[str, str] = {}
    for pid in sorted(merged):
        usable = list(dict.fromkeys(p for p in local.get(pid, ()) if p not in bad))
        if not usable:
            continue
        label = len({s.cls for s in samples})
        samples += [Sample(path, label, pid) for path in usable]
        if merged[pid].group:
            groups[pid] = merged[pid].group
    if len({s.cls for s in samples}) < 2:
        raise ConfigError(f"{source} has {len({s.cls for s in samples})} product(s) with a usable photo",
                          hint="training needs at least two products")
    if group_field:
        log.info("products grouped by %r (%d groups)", group_field, len(set(groups.values())))
    return Catalogue(source, samples, groups, skipped, list(refused), root, group_field if groups else None)


def _localise(products: Iterable[Product], settings: Settings) -> tuple[dict[str, list[str]], list[Unusable]]:
    """Each product's photos as local paths: files as they are, URLs fetched into the cache."""
    local: dict[str, list[str]] = {}
    failed: list[Unusable] = []
    todo = [(p.id, ref) for p in products for ref in p.photos]
    for pid, ref in progress_iter(todo, "catalogue photos") if any(is_url(r) for _, r in todo) else todo:
        try:
            local.setdefault(pid, []).append(_fetched(ref, settings) if is_url(ref) else ref)
        except (ImageError, PathRefused) as exc:
            failed.append(Unusable(ref, getattr(exc, "reason", "url_error"), str(exc)))
    return local, failed


def _fetched(url: str, settings: Settings) -> str:
    """A photo URL's bytes in the cache (fetched once, under the workers' URL guard)."""
    from ..ingest.fetch import FetchPolicy, fetch

    path = cache_dir("photos") / hashlib.sha256(url.encode()).hexdigest()
    if not path.exists():
        data = fetch(url, FetchPolicy.from_settings(settings))
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path)
