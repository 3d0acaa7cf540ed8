"""What `esm train` says about the model it wrote: both protocols against the pretrained model,
the gate in plain words, the re-ranking it chose (pure: a card in, lines out)."""
from __future__ import annotations

from pathlib import Path

from ..model.card import card_cutoff
from ..types import ModelCard

__all__ = ["card_lines", "evaluation_lines", "protocol_line"]


def _pct(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def protocol_line(name: str, fig: dict) -> str:
    """One protocol: model vs baseline, with the interval of the gate metric's difference."""
    if "note" in fig:
        return f"  {name:<15} {fig['note']}"
    m, b, d = fig["model"], fig["baseline"], fig["difference"]
    of = f" of {fig['of_possible']}" if fig.get("of_possible") else ""  # a large catalogue: a bound
    line = (f"  {name:<15} {fig['n_queries']}{of} queries  R@1 {m['recall_at_1']:.3f} vs {b['recall_at_1']:.3f}  "
            f"MRR {m['mrr']:.3f} vs {b['mrr']:.3f}  MAP@R {m['map_at_r']:.3f} vs {b['map_at_r']:.3f} "
            f"(diff {_pct(d['map_at_r'])})")
    if "group_precision_at_10" in m:
        line += f"  group P@10 {m['group_precision_at_10']:.3f} vs {b['group_precision_at_10']:.3f}"
    return line


def cutoff_line(card: ModelCard) -> str:
    """What ``--min-similarity auto`` will cut at, or why it cannot."""
    cut = card["metrics"].get("cutoff")
    cut = cut if isinstance(cut, dict) else {}
    sim, precision = card_cutoff(card), cut.get("precision")
    if sim is None or not isinstance(precision, (int, float)) or isinstance(precision, bool):
        return ("cut-off: none (too few validation photos, or no similarity reaches the precision target "
                "--cutoff-precision); --min-similarity auto refuses this model")
    keep = "at most" if cut.get("keep") == "at most" else "at least"
    recall = cut.get("recall")
    kept = f", {recall:.1%} of their right hits kept" if isinstance(recall, (int, float)) else ""
    return (f"cut-off (--min-similarity auto): similarity {keep} {sim:.4f}, where first pages are the "
            f"query's own product with precision {precision:g} on {cut.get('n_queries', '?')} validation "
            f"photos{kept}")


def card_lines(card: ModelCard, path: Path | str) -> list[str]:
    m = card["metrics"]
    gate = m["gate"]
    lines = [f"wrote {path}  model id {card['model_id']}  ({card['dims']}-d, {card['similarity']})"]
    if card.get("runtime"):
        lines.append(f"exported {card['runtime']['export']} (ONNX, min cosine to torch "
                     f"{card['runtime']['parity_min_cosine']})")
    t = card.get("training") or {}
    lines.append(f"{t.get('n_products')} products, {t.get('n_photos')} photos from {t.get('source')}; "
                 f"trained in {m.get('train_seconds')} s")
    lines.append("validation (model vs pretrained on the same queries; MAP@R difference with its 95 % interval):")
    lines += [protocol_line(name, fig) for name, fig in (m.get("validation") or {}).items()]
    if m.get("measured_head", "shipped") != "shipped":
        lines.append(f"note: these are the figures of the {m['measured_head']}")
    if m.get("views_sampled"):
        lines.append(f"note: {m['views_sampled']}")
    if gate.get("pretrained"):
        lines.append(f"gate: {gate['verdict']}")
    else:
        lines.append(f"gate {'PASSED' if gate['passed'] else 'NOT PASSED'}: {gate['verdict']}"
                     + ("" if gate["passed"] else "; `esm mapping create` and `esm reindex` refuse this "
                        "file without --force"))
    chosen = (m.get("rerank_measured") or {}).get("chosen", "none")
    lines.append(f"re-ranking: {chosen}" + ("" if chosen != "none" else
                                            " (neither query expansion nor DBA helped beyond the margin)"))
    lines.append(cutoff_line(card))
    if m.get("intended_for"):
        lines.append(f"for: {m['intended_for']}")
    return lines


def evaluation_lines(metrics: dict) -> list[str]:
    """`esm evaluate`: each metric of the model, with the baseline and the interval beside."""
    base, diff = metrics.get("baseline"), metrics.get("difference") or {}
    lines = [f"{metrics['name']}: {metrics['n_queries']} queries, {metrics['n_classes']} products"
             + (f"; baseline {base['name']}" if base else "")]
    for key in ("recall_at_1", "mrr", "map_at_r", "map", "recall_at_10", "group_precision_at_10"):
        if key not in metrics:
            continue
        line = f"  {key:<22} {metrics[key]:.4f}"
        if base and key in diff:
            lo, hi = diff[key]["ci95"]
            line += f"  vs {base[key]:.4f}  ({diff[key]['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}])"
        lines.append(line)
    from ..training.calibrate import cutoff_check_line  # evaluate ran: its modules are loaded

    checked = cutoff_check_line(metrics.get("cutoff"))
    if checked:
        lines.append(f"  {checked}")
    if metrics.get("queries_sampled"):
        lines.append(f"note: {metrics['queries_sampled']}")
    if metrics.get("index_sampled"):
        lines.append(f"note: {metrics['index_sampled']}")
    if metrics.get("trained_on_this_catalogue"):
        lines.append("note: the model was trained on this catalogue: these photos are not new to it, "
                     "so the figures are optimistic (the card has the held-out ones)")
    if metrics.get("report"):
        lines.append(f"report: {metrics['report']}")
    return lines
