"""Cheap validation of an image folder before training, evaluation or a split reads it.

Every file is decoded once the way training decodes it (``images.read_bytes`` + ``decode``),
but small: a JPEG at 1/8 scale (libjpeg still reads every byte, so truncation shows), other
formats fully.
Decoders release the GIL, so a thread pool runs them side by side. Verdicts are cached by path,
size and modification time: a second run over an unchanged folder decodes nothing.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ImageError
from ..images import decode, read_bytes

log = logging.getLogger(__name__)

CHECK_VERSION = 1   # bump when the decoder's verdicts change: cached verdicts are then ignored
DRAFT = 32          # decode JPEGs at the smallest scale that is still >= this many pixels
MAX_CACHED = 200_000


@dataclass(frozen=True)
class Unusable:
    """An image that cannot be used, with the decoder's reason code and message."""

    path: str
    reason: str
    message: str

    def as_dict(self, root: Path | None = None) -> dict:
        path = os.path.relpath(self.path, root) if root else self.path
        return {"path": path, "reason": self.reason, "message": self.message}


def _check_one(path: str) -> tuple[str, str] | None:
    try:
        decode(read_bytes(path), draft=DRAFT)
    except ImageError as exc:
        return exc.reason, exc.message
    except OSError as exc:  # e.g. a file that vanished or an I/O error while reading
        return "unreadable", f"{Path(path).name}: {exc.strerror or exc}"
    return None


def _key(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{CHECK_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}"


def _load(cache: Path | None) -> dict:
    try:
        return json.loads(cache.read_text()) if cache else {}
    except (OSError, ValueError):
        return {}


def _save(cache: Path | None, verdicts: dict) -> None:
    if cache is None:
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(verdicts))
        tmp.replace(cache)
    except OSError as exc:  # a read-only home costs speed, not correctness
        log.debug("image check cache not written: %s", exc)


def check_images(paths: Sequence[str], cache: Path | None = None,
                 workers: int | None = None) -> list[Unusable]:
    """The unusable files among ``paths`` (in their order), each with its reason."""
    verdicts = _load(cache)
    keys = {p: _key(p) for p in paths}
    todo = [p for p, k in keys.items() if k is not None and k not in verdicts]
    if todo:
        with ThreadPoolExecutor(workers or min(8, 2 * (os.cpu_count() or 1))) as pool:
            for path, verdict in zip(todo, pool.map(_check_one, todo)):
                verdicts[keys[path]] = verdict
        current = [(k, v) for k, v in verdicts.items() if k.startswith(f"{CHECK_VERSION}|")]
        _save(cache, dict(current[-MAX_CACHED:]))  # the newest verdicts of this decoder version
    bad = []
    for path, key in keys.items():
        verdict = ("missing_file", f"{path}: cannot be read") if key is None else verdicts[key]
        if verdict:
            bad.append(Unusable(path, *verdict))
    return bad


def summary(bad: Sequence[Unusable], total: int, root: Path, shown: int = 20) -> str:
    """One message listing the unusable files (the first ``shown``) and why."""
    rows = [f"{u.as_dict(root)['path']} ({u.reason}: {u.message})" for u in bad[:shown]]
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return (f"skipped {len(bad)} unusable image(s) of {total} in {root}: " + "; ".join(rows) + more)
