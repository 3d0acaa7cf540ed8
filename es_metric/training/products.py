"""A product of a catalogue, and its group (category) read from a field value (pure)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_GROUP_CHARS", "Product", "group_value"]

MAX_GROUP_CHARS = 512


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
