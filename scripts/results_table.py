"""Print the README's markdown table from scripts/grocery_experiments.sh output."""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/grocery")
print("| protocol | method | MAP@R | Recall@1 | mAP | train s | gate |")
print("|---|---|---|---|---|---|---|")
for proto in ("in-domain", "class-disjoint"):
    for f in sorted(out.glob(f"{proto}-*.json")):
        if f.name.endswith(".card.json"):
            continue
        m = json.loads(f.read_text())
        name = f.stem[len(proto) + 1:]
        card_path = out / f"{proto}-{name}.card.json"
        secs, gate = "", ""
        if card_path.exists():
            card = json.loads(card_path.read_text())
            secs = card["metrics"].get("train_seconds", "")
            gate = "pass" if card["metrics"]["gate"]["passed"] else "FAIL"
        print(f"| {proto} | {name} | {m['map_at_r']:.3f} | {m['recall_at_1']:.3f} | {m['map']:.3f} | {secs} | {gate} |")
