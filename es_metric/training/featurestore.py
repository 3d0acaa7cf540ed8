"""Backbone features cached per photo: training again on a catalogue that grew computes only the
new photos' features (cost follows the change), and any subset of photos reuses them.

One SQLite file per cache folder (stdlib, safe for several processes): a row per (what computed
it, photo path, size, modification time) holding the float32 vector. The key names the backbone,
its weights, the preprocessing and the pixel version, so a change of any of them misses.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["FeatureStore", "photo_key"]

CHUNK = 500  # keys per SQL statement (SQLite's parameter limit is far above)


def photo_key(config: str, path: str) -> str:
    """The key of one photo's features under ``config`` (changes when the file does)."""
    st = os.stat(path)
    return hashlib.sha256(f"{config}|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


class FeatureStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with closing(self._connect()) as db:
            for lo in range(0, len(keys), CHUNK):
                part = list(keys[lo:lo + CHUNK])
                marks = ",".join("?" * len(part))
                for key, dim, blob in db.execute(f"SELECT key, dim, vec FROM features WHERE key IN ({marks})", part):
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if len(vec) == dim:
                        found[key] = vec
        return found

    def put(self, rows: dict[str, np.ndarray]) -> None:
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?)",
                           [(k, int(v.size), np.ascontiguousarray(v, np.float32).tobytes()) for k, v in rows.items()])

    def features(self, config: str, paths: Sequence[str],
                 compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """N x D features of ``paths`` in order: stored ones read, the others computed by
        ``compute(positions)`` (rows in the order asked) and stored."""
        keys = [photo_key(config, p) for p in paths]
        found = self.get(list(dict.fromkeys(keys)))
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            new = np.asarray(compute(missing), np.float32)
            self.put({keys[i]: new[j] for j, i in enumerate(missing)})
            found.update({keys[i]: new[j] for j, i in enumerate(missing)})
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
