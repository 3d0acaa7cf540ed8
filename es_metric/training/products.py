"""A product of a catalogue, and its group (category) read from a field value (pure)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AUTO_GROUP_FIELDS", "MAX_GROUP_CHARS", "Product", "dotted", "group_value", "pick_group_field"]

MAX_GROUP_CHARS = 512
#: Fields taken as the group when ``--group-field auto`` (the default) finds one of them, in
#: this order, in at least half of the products.
AUTO_GROUP_FIELDS = ("category", "categories", "category_path", "product_type", "group")


@dataclass(frozen=True)
class Product:
    id: str
    photos: tuple[str, ...]          # local paths or http(s) URLs
    group: str | None = None


def group_value(value: object) -> str | None:
    """A group (category) from a field value: a string, a number, or a path given as a list
    (``["Women", "Tops"]`` → ``"Women > Tops"``); anything else has no group."""
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) for v in value):
        value = " > ".join(str(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text[:MAX_GROUP_CHARS] or None


def dotted(source: dict, name: str | None) -> object:
    """``source``'s value at a dotted field name (``category.path``), or None."""
    value: object = source
    for part in (name or "").split("."):
        if not isinstance(value, dict) or not part:
            return None
        value = value.get(part)
    return value


def pick_group_field(rows: list[dict], asked: str | None) -> str | None:
    """The group field: ``asked``; with ``auto``, the first of AUTO_GROUP_FIELDS that at least
    half of the products (``rows``: their fields) have; ``none`` (or nothing found): no group."""
    if not asked or asked == "none":
        return None
    if asked != "auto":
        return asked
    for name in AUTO_GROUP_FIELDS:
        if rows and 2 * sum(group_value(dotted(r, name)) is not None for r in rows) >= len(rows):
            return name
    return None
