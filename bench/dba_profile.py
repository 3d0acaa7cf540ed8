"""Where an incremental DBA pass spends its time, on bench/dba.py's kept index of N documents.

Ingests P held-out photos with `esm ingest --no-dba` (as its own process), then runs the pass
(``augment_new``, what `esm dba INDEX` runs) in this process with its stages timed: the kNN
searches for the new documents (``size`` > k + 1), the kNN searches for the existing documents
they entered (``size`` = k + 1), the reads of raw vectors (and markers) by id, the writes, the
refreshes; "other" is the rest (Python: parsing, exact similarities, blending). ``took_s``
is Elasticsearch's own time summed over the searches of a stage (they run in parallel inside
one _msearch, so it can exceed the wall time).

``--dry N`` first runs the pass N times without writing (the same documents stay new, so the
searches and reads repeat on the same state); the last run writes. Only the stage boundaries are
patched (``dbaknn._msearch``, ``dba.write``, the client's refresh), so the script profiles any
version of the module: run it with ``PYTHONPATH`` at another checkout to profile that one.

Usage: python bench/dba_profile.py --n 1000000 --photos 100 [--first F] [--dry 1] [--reset]
       [--label NAME]
       python bench/dba_profile.py --reset-only; PYTHONPATH=<other checkout> python bench/dba_profile.py
       --label before     (bench/dba.py's reset writes the markers of this checkout)
Needs the stack and the kept index. Writes bench/results/dba-profile-<n>-<label>.json. After
it, `bench/dba.py --reset` puts the index back to its built state.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_result

import dba as bench
import es_metric.search.dba as dba
import es_metric.search.dbaknn as dbaknn
from es_metric.config import Settings
from es_metric.index.client import make_client


class Stages:
    """Wall time (and Elasticsearch's took) per stage of one pass."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = collections.defaultdict(float)
        self.took: dict[str, float] = collections.defaultdict(float)
        self.count: collections.Counter = collections.Counter()

    def add(self, stage: str, seconds: float, count: int = 1, took: float = 0.0) -> None:
        self.wall[stage] += seconds
        self.took[stage] += took
        self.count[stage] += count

    def table(self, total: float) -> dict:
        other = total - sum(self.wall.values())
        rows = {s: {"wall_s": round(w, 2), "took_s": round(self.took[s], 2), "count": self.count[s]}
                for s, w in sorted(self.wall.items())}
        return {"total_s": round(total, 2), **rows, "other": {"wall_s": round(other, 2)}}


def patch(es, stages: Stages, k: int, writing: bool):
    """Time the stage boundaries (``writing`` False: the writes are counted, not sent); returns
    what puts them back."""
    msearch, write, refresh = dbaknn._msearch, dba.write, es.indices.refresh

    def timed_msearch(client, index, bodies):
        t0 = time.perf_counter()
        out = msearch(client, index, bodies)
        if bodies:
            size = bodies[0].get("size", 0)
            stage = ("knn_new_documents" if size > k + 1 else "knn_entered") if "knn" in bodies[0] else "reads"
            stages.add(stage, time.perf_counter() - t0, len(bodies), sum(r.get("took", 0) for r in out) / 1000)
        return out

    def timed_write(p, actions):
        if not writing:
            stages.add("writes (not sent)", 0.0, len(actions))
            return []
        t0 = time.perf_counter()
        out = write(p, actions)
        stages.add("writes", time.perf_counter() - t0, len(actions))
        return out

    def timed_refresh(**kw):
        t0 = time.perf_counter()
        out = refresh(**kw)
        stages.add("refreshes", time.perf_counter() - t0)
        return out

    dbaknn._msearch, dba.write, es.indices.refresh = timed_msearch, timed_write, timed_refresh

    def undo() -> None:
        dbaknn._msearch, dba.write, es.indices.refresh = msearch, write, refresh
    return undo


def ingest(alias: str, files: list[Path]) -> float:
    m = bench.manifest(files, Path(tempfile.mkdtemp(prefix="dba-profile-")))
    env = {**os.environ, "ESM_IMAGE_ROOTS": str(bench.DATA), "ESM_PROGRESS": "0"}
    t0 = time.perf_counter()
    subprocess.run(["esm", "ingest", alias, str(m), "--no-dba", "--json"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--first", type=int, default=0, help="the first held-out photo to ingest")
    ap.add_argument("--dry", type=int, default=1, help="passes without writes before the one that writes")
    ap.add_argument("--reset", action="store_true", help="first put the kept index back to its built state")
    ap.add_argument("--reset-only", action="store_true",
                    help="only that (with this checkout: before profiling another one with PYTHONPATH)")
    ap.add_argument("--label", default="head")
    args = ap.parse_args()
    es = make_client(Settings.from_env(), request_timeout=3600)
    alias = f"bench-dba-{args.n}"
    held = bench.photos(12)[1]
    result: dict = {"n": args.n, "photos": args.photos, "label": args.label, "module": dba.__file__}
    if args.reset or args.reset_only:
        result["reset"] = bench.reset(es, alias, held)
        if args.reset_only:
            print(result["reset"])
            return
    result["ingest_no_dba_s"] = round(ingest(alias, held[args.first:args.first + args.photos]), 2)
    passes = []
    for n in range(args.dry + 1):
        stages = Stages()
        undo = patch(es, stages, bench.K, writing=n == args.dry)
        t0 = time.perf_counter()
        counts = dba.augment_new(es, alias)
        passes.append({"writes": n == args.dry, "load_avg_1m": round(os.getloadavg()[0], 2),
                       "stages": stages.table(time.perf_counter() - t0), "counts": counts})
        undo()
        print(passes[-1], flush=True)
    result["passes"] = passes
    write_result(f"dba-profile-{args.n}-{args.label}", result)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
