"""Forward-pass speed of backbones at their native input sizes, interleaved (the machine is shared).

Each round times every backbone once on the same batch (random pixels: speed does not depend on
content), so the ratios between backbones stay meaningful when the load changes; medians over
rounds are reported.

Usage: python bench/backbones.py [--backbones efficientnet-lite0,efficientnet-lite1,efficientnet-lite2]
                                 [--batch 16] [--rounds 7]
Writes bench/results/backbones.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import write_result
from es_metric.model.encoder import backbone_spec, create_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbones", default="efficientnet-lite0,efficientnet-lite1,efficientnet-lite2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    names = args.backbones.split(",")
    models, inputs = {}, {}
    for name in names:
        size = backbone_spec(name).preprocess.size
        models[name] = create_encoder(name, dim=256, pretrained=False).eval()
        inputs[name] = torch.rand(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    speeds: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for name in names:  # warm-up
            models[name](inputs[name])
        for _ in range(args.rounds):
            for name in names:
                t0 = time.perf_counter()
                models[name](inputs[name])
                speeds[name].append(args.batch / (time.perf_counter() - t0))
    base = statistics.median(speeds[names[0]])
    rows = []
    for name in names:
        med = statistics.median(speeds[name])
        rows.append({"backbone": name, "size": backbone_spec(name).preprocess.size,
                     "img_per_s": round(med, 1), "relative": round(med / base, 2)})
        print(f"{name:<20} {rows[-1]['size']} px  {med:6.1f} img/s  x{med / base:.2f} of {names[0]}")
    write_result("backbones", {"batch": args.batch, "rounds": args.rounds, "threads": torch.get_num_threads(),
                               "rows": rows})


if __name__ == "__main__":
    main()
