"""Per-call cost of `esm search` as a person types it: wall time and peak RSS of the whole
process (`/usr/bin/time -v`), by image and by an indexed document, median of --runs calls, and
whether the call imported torch (one more call with PYTHONPROFILEIMPORTTIME, not timed).

--before DIR: also the es_metric package in DIR (e.g. `git archive REV es_metric | tar -x -C DIR`),
put first on PYTHONPATH; the two versions alternate call by call, so both see the same load.

Usage: python bench/light_search.py INDEX --image PHOTO --like ID [--runs 7] [--before DIR]
Needs the stack and an index whose model has an ONNX export. Writes
bench/results/NAME.json (--name; the rows, the load average before and after).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess

from common import write_result

WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)")
RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one run of ``cmd`` under /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    wall, rss = WALL.search(proc.stderr), RSS.search(proc.stderr)
    assert wall and rss, proc.stderr[-2000:]
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1024


def imports(cmd: list[str], env: dict[str, str],
            names: tuple[str, ...] = ("torch", "torchvision", "onnxruntime")) -> list[str]:
    """The top-level packages among ``names`` that one run of ``cmd`` imported."""
    env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    err = subprocess.run(cmd, capture_output=True, text=True, env=env).stderr
    seen = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return [n for n in names if n in seen]


def measure(cmd: list[str], versions: dict[str, dict[str, str]], runs: int) -> list[dict]:
    """A row per code version: ``runs`` calls each, the versions alternating call by call."""
    for env in versions.values():
        timed(cmd, env)  # warm the page cache
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
    for _ in range(runs):
        for name, env in versions.items():
            samples[name].append(timed(cmd, env))
    rows = []
    for name, env in versions.items():
        walls, rss = zip(*samples[name])
        rows.append({"code": name, "cmd": " ".join(cmd), "runs": runs,
                     "wall_s_median": round(statistics.median(walls), 2), "wall_s_min": round(min(walls), 2),
                     "wall_s_max": round(max(walls), 2), "peak_rss_mb_median": round(statistics.median(rss)),
                     "imports": imports(cmd, env)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("index")
    ap.add_argument("--image", required=True)
    ap.add_argument("--like", required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--esm", default=shutil.which("esm") or "esm")
    ap.add_argument("--name", default="light_search")
    ap.add_argument("--before", help="a folder holding an earlier es_metric package")
    args = ap.parse_args()
    versions = {"this checkout": dict(os.environ)}
    if args.before:
        path = os.pathsep.join(filter(None, [args.before, os.environ.get("PYTHONPATH")]))
        versions["before"] = {**os.environ, "PYTHONPATH": path}
    load_before = os.getloadavg()
    rows = [row for query in (["--image", args.image], ["--like", args.like])
            for row in measure([args.esm, "search", args.index, *query, "--json"], versions, args.runs)]
    result = {"rows": rows, "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()}
    for row in rows:
        print(f"{row['code']}: {row['cmd']}: {row['wall_s_median']} s ({row['wall_s_min']}-{row['wall_s_max']}), "
              f"{row['peak_rss_mb_median']} MB, imports {row['imports']}")
    print(f"load average before {result['load_before']}, after {result['load_after']}")
    write_result(args.name, result)


if __name__ == "__main__":
    main()
