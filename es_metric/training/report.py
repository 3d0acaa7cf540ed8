"""A self-contained HTML evaluation report: metrics, a Recall@K plot, and query → top-k image
grids (correct in green, wrong in red), so a person sees what the metric learned."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from ..images import load_image
from ..search.rerank import NO_RERANK, ReRank, augment_database
from .calibrate import cutoff_check_line
from .evaluate import Embedded, neighbours

THUMB = 96


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def recall_plot(metrics: dict, baseline: dict | None = None) -> str:
    """Recall@K of the model, and of the baseline on the same queries when given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(k) for k in metrics["recall_at_k"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ks, [metrics["recall_at_k"][str(k)] for k in ks], marker="o", label=metrics["name"])
    if baseline:
        bks = sorted(int(k) for k in baseline["recall_at_k"])
        ax.plot(bks, [baseline["recall_at_k"][str(k)] for k in bks], marker="s", linestyle="--",
                label=baseline["name"])
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(metrics["name"])
    ax.grid(alpha=0.3)
    uri = _png_data_uri(fig)
    plt.close(fig)
    return uri


def _thumb(path: str) -> str:
    img, _ = load_image(path, draft=THUMB)
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def pick_queries(labels: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """One query from each of up to ``n`` classes, chosen reproducibly."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:n]
    return [int(rng.choice(np.nonzero(labels == c)[0])) for c in classes]


def grid_rows(emb: Embedded, n_queries: int = 12, k: int = 8, rerank: ReRank = NO_RERANK) -> str:
    """Example queries and their results, ranked as the metrics were (with ``rerank``)."""
    vecs = augment_database(emb.vectors, rerank.dba_k, rerank.dba_alpha, emb.metric)
    picked = pick_queries(emb.labels, n_queries)
    nn = neighbours(vecs, emb.metric, k, rerank, rows=picked) if picked else np.zeros((0, k), np.int64)
    rows = []
    for q, found in zip(picked, nn):
        cells = [f'<td class="q"><img src="{_thumb(emb.samples[q].path)}"><br>'
                 f'{html.escape(emb.samples[q].cls)}</td>']
        for j in found:
            ok = emb.labels[j] == emb.labels[q]
            cells.append(f'<td class="{"ok" if ok else "bad"}"><img src="{_thumb(emb.samples[j].path)}">'
                         f'<br>{html.escape(emb.samples[j].cls)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows)


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def metrics_table(metrics: dict) -> str:
    """Model (and baseline, and the 95 % interval of the difference) per metric."""
    keys = [k for k in ("recall_at_1", "mrr", "map_at_r", "map", "recall_at_10", "group_precision_at_10",
                        "n_queries", "n_classes") if k in metrics]
    base, diff = metrics.get("baseline"), metrics.get("difference") or {}
    head = "<tr><th></th><th>model</th>" + ("<th>baseline</th><th>difference [95 % interval]</th>" if base else "")
    rows = []
    for k in keys:
        row = f"<tr><th>{k}</th><td>{_cell(metrics[k])}</td>"
        if base:
            d = diff.get(k)
            span = (f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
                    f"{' better' if d['better'] else ''}" if d else "")
            row += f"<td>{_cell(base.get(k, ''))}</td><td>{span}</td>"
        rows.append(row + "</tr>")
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def write_report(path: str | Path, metrics: dict, emb: Embedded) -> Path:
    table = metrics_table(metrics)
    baseline = ", beside the pretrained baseline on the same queries" if metrics.get("baseline") else ""
    grid = grid_rows(emb, rerank=ReRank.from_dict(metrics.get("rerank")))
    checked = cutoff_check_line(metrics.get("cutoff"))
    cutoff = f"<p>{html.escape(checked)}</p>" if checked else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>es-metric evaluation: {html.escape(metrics['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse}}
th,td{{padding:4px 8px;text-align:left}} .grid td{{font-size:11px;text-align:center;vertical-align:top}}
.grid img{{width:{THUMB}px;height:{THUMB}px;object-fit:cover;border:4px solid #ccc}}
.ok img{{border-color:#1a9e3a}} .bad img{{border-color:#d62728}} .q img{{border-color:#333}}</style>
</head><body><h1>Retrieval evaluation: {html.escape(metrics['name'])}</h1>
<p>Every photo of a product with two photos or more queries all the others
({metrics['metric']} similarity{baseline}).
Grids: the query (black), then its nearest photos, the same product in green, other products in red.</p>
{table}{cutoff}<p><img alt="Recall@K" src="{recall_plot(metrics, metrics.get("baseline"))}"></p>
<h2>Queries and their top {8} results</h2><table class="grid">{grid}</table>
</body></html>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
