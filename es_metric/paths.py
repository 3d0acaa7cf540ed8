"""Which files may be read: image paths are confined to root folders (pure, no client).

Roots are what the user configured (``ESM_IMAGE_ROOTS``) plus what was recorded for the index
when it was ingested (the folder, or the manifest's folder, kept in the index's ``_meta`` and
carried in every job). With no root at all nothing is read. Symlinks are resolved before the
check, so a link inside a root that points outside it is refused too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import PathRefused

__all__ = ["as_roots", "confine", "HINT", "job_roots", "PATH_MAX", "within"]

PATH_MAX = 4096
HINT = "set ESM_IMAGE_ROOTS (folders separated by ':') to allow another folder"


def as_roots(values: Iterable[str | Path]) -> tuple[Path, ...]:
    """Resolved, de-duplicated root folders, in order."""
    seen: dict[Path, None] = {}
    for value in values:
        if value:
            seen.setdefault(Path(os.path.abspath(value)).resolve(), None)
    return tuple(seen)


def job_roots(job: Mapping[str, Any]) -> tuple[Path, ...]:
    """The roots a job spec carries (a list of folder paths; anything else counts as none)."""
    roots = job.get("roots") if isinstance(job, dict) else None
    if not isinstance(roots, (list, tuple)):
        return ()
    return as_roots(r for r in roots if isinstance(r, str) and r.startswith("/"))


def within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def confine(path_text: object, base: Path, roots: tuple[Path, ...], hint: str = HINT) -> Path:
    """``path_text`` resolved against ``base`` (symlinks followed); PathRefused when it is not a
    usable path or resolves outside every root."""
    if not isinstance(path_text, str) or not path_text:
        raise PathRefused(f"image path {path_text!r} is not a path", hint="give a file path")
    if len(path_text) > PATH_MAX:
        raise PathRefused(f"image path {path_text[:200]!r}... is longer than {PATH_MAX} characters",
                          hint="give a file path")
    if "\x00" in path_text:
        raise PathRefused(f"image path {path_text[:200]!r} contains a NUL byte", hint="give a file path")
    try:
        path = (Path(base) / path_text).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # too long, symlink loop, ...
        raise PathRefused(f"image path {path_text[:200]!r} cannot be resolved: "
                          f"{type(exc).__name__}", hint="give a file path") from None
    if not roots:
        raise PathRefused(f"image path {path_text[:200]!r}: no image root is configured or "
                          "recorded for this index, so no file may be read", hint=hint)
    if not within(path, roots):
        raise PathRefused(f"image path {path_text[:200]!r} resolves to {str(path)[:200]}, outside "
                          f"the allowed roots {[str(r) for r in roots]}", hint=hint)
    return path
