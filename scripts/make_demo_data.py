"""Build examples/grocery-mini from the Grocery Store dataset (MIT): a few products, a few photos
each, the catalogue text per product, and a JSONL manifest for `esm ingest`.

Run once by a maintainer; the result is committed so the demo needs nothing outside the repo.
Usage: python scripts/make_demo_data.py GROCERY_DIR examples/grocery-mini
"""
import json
import shutil
import sys
from pathlib import Path

CLASSES = ["Banana", "Orange", "Lime", "Lemon", "Red-Bell-Pepper", "Green-Bell-Pepper",
           "Alpro-Blueberry-Soyghurt", "Arla-Natural-Yoghurt", "Yoggi-Vanilla-Yoghurt",
           "Oatly-Oat-Milk", "Arla-Standard-Milk", "Bravo-Apple-Juice", "Tropicana-Apple-Juice",
           "God-Morgon-Orange-Juice"]
PER_CLASS = 12
TEXT_KEYS = ("title", "description", "coarse_class", "group", "origin_and_size", "ingredients")


def main(src: Path, dest: Path) -> None:
    products = {p["class"]: p for p in map(json.loads, (src / "products.jsonl").read_text().splitlines())}
    if dest.exists():
        shutil.rmtree(dest)
    rows = []
    for cls in CLASSES:
        photos = sorted((src / cls).glob("*.jpg"))
        files = photos[:: max(1, len(photos) // PER_CLASS)][:PER_CLASS]
        (dest / "images" / cls).mkdir(parents=True)
        product = products[cls]
        for f in files:
            shutil.copyfile(f, dest / "images" / cls / f.name)
            row = {"id": f"{cls}/{f.stem}", "image": f"images/{cls}/{f.name}", "product": cls}
            row.update({k: product[k] for k in TEXT_KEYS if product.get(k)})
            rows.append(row)
    (dest / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (dest / "LICENSE").write_text(LICENSE)
    print(f"{len(rows)} images of {len(CLASSES)} products in {dest}")


LICENSE = """The images and product texts in this folder are a small subset of the Grocery Store
Dataset by Marcus Klasson, Cheng Zhang and Hedvig Kjellström ("A Hierarchical Grocery Store Image
Dataset with Visual and Semantic Labels", WACV 2019), https://github.com/marcusklasson/GroceryStoreDataset

MIT License

Copyright (c) 2019 Marcus Klasson

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
