"""The contracts between the parts: plain, JSON-safe values that cross Celery, the model file,
the index's ``_meta`` and the HTTP API. No behaviour beyond (de)serialising.

May import: the standard library only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ReRank:
    """Re-ranking settings: ``qe_k`` neighbours expand the query, ``dba_k`` neighbours augment
    every indexed vector (0 turns either off). A model card records them under ``rerank``."""

    qe_k: int = 0
    qe_alpha: float = 3.0
    dba_k: int = 0
    dba_alpha: float = 3.0

    @property
    def active(self) -> bool:
        return self.qe_k > 0 or self.dba_k > 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ReRank":
        d = d or {}
        return cls(int(d.get("qe_k", 0)), float(d.get("qe_alpha", 3.0)), int(d.get("dba_k", 0)),
                   float(d.get("dba_alpha", 3.0)))


NO_RERANK = ReRank()
