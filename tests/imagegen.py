"""Tiny labelled images made by the tests themselves (no downloads, no shared data).

Each class is a shape in a colour on a noisy background; position, size and brightness vary,
so a model has to learn something to retrieve same-class images.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = [("circle", (220, 40, 40)), ("square", (40, 180, 60)), ("triangle", (40, 80, 220)),
           ("circle", (230, 200, 30)), ("square", (160, 50, 200)), ("triangle", (30, 200, 200))]


def make_image(cls: int, rng: random.Random, size: int = 64) -> Image.Image:
    shape, colour = CLASSES[cls % len(CLASSES)]
    bg = tuple(rng.randint(90, 160) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(25):  # background clutter
        x, y = rng.randrange(size), rng.randrange(size)
        draw.point((x, y), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    r = rng.randint(size // 6, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    jitter = rng.uniform(0.75, 1.15)
    fill = tuple(min(255, int(c * jitter)) for c in colour)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def make_dataset(root: Path, n_classes: int = 6, per_class: int = 16, seed: int = 0,
                 size: int = 64, fmt: str = "JPEG") -> Path:
    """``root/class_<i>/img_<j>.jpg``; returns root."""
    rng = random.Random(seed)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    for c in range(n_classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            make_image(c, rng, size).save(d / f"img_{j:03d}.{ext}", fmt, quality=90)
    return root


def make_grainy(root: Path, n: int = 16, size: int = 150, seed: int = 0) -> Path:
    """``root/img_<i>.jpg``: shapes with per-pixel grain, larger than a small-cnn's 64 px input
    and every second one oblong, so that resizing and cropping them matters: embedders fed
    pixels resized with different filters (nearest, box, bicubic vs bilinear) differ beyond the
    parity tolerance on these, but not on the flat tiny images."""
    rng, grain = random.Random(seed), np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = np.asarray(make_image(i % len(CLASSES), rng, size)).astype(np.int16)
        img = Image.fromarray(np.clip(pixels + grain.integers(-40, 41, pixels.shape), 0, 255).astype(np.uint8))
        (img.crop((0, size // 8, size, size * 7 // 8)) if i % 2 else img).save(root / f"img_{i:03d}.jpg",
                                                                              quality=90)
    return root


def make_manifest(root: Path, out: Path, categories: dict[int, str] | None = None) -> Path:
    """A JSONL manifest over a generated dataset: id, image (relative), title, category, price."""
    lines = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        c = int(d.name.split("_")[1])
        for f in sorted(d.iterdir()):
            lines.append({"id": f"{d.name}-{f.stem}", "image": str(f.relative_to(out.parent)),
                          "title": f"{CLASSES[c % len(CLASSES)][0]} number {c}",
                          "category": (categories or {}).get(c, f"cat{c % 3}"),
                          "price": 10 + c * 5})
    out.write_text("\n".join(json.dumps(row) for row in lines) + "\n")
    return out
