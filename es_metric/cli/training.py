"""esm train | evaluate | split | model show."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..training.config import (AUGMENTATIONS, DEFAULT_CUTOFF_PRECISION, DEFAULT_RERANK, HEAD_INITS,
                               MAX_EVAL_QUERIES, POOLINGS, PROTOCOLS, RERANK_PHOTOS, VIEW_PHOTOS)
from ..model.card import read_card
from .common import FiniteRange, RegistryChoice, echo_json
from .cards import card_lines, evaluation_lines
from ..config import Settings
from ..device import resolve_device
from ..errors import ModelError
from .root import main


def _backbones() -> list[str]:
    from ..model.encoder import BACKBONES

    return list(BACKBONES)


def _objectives() -> list[str]:
    from ..training.losses import OBJECTIVES

    return list(OBJECTIVES)


@main.command()
@click.argument("data", required=False, type=click.Path(exists=True))
@click.option("--from-index", "from_index", metavar="INDEX",
              help="Train on the photos of an index es-metric ingested (instead of DATA).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
@click.option("--group-field", metavar="FIELD|auto|none", default="auto", show_default=True,
              help="Catalogue field of a coarse level (e.g. category): products of one group stay nearer "
                   "each other than products of other groups (a two-level objective). auto: the first of "
                   "category, categories, category_path, product_type, group that most products have.")
@click.option("--group-weight", type=FiniteRange(min=0), default=0.5, show_default=True,
              help="Weight of the group level against the product level.")
@click.option("--product-field", metavar="FIELD",
              help="--from-index on a one-photo-per-document index: documents with the same value are one "
                   "product (default: each document is a product).")
@click.option("--loss", type=RegistryChoice(_objectives), default="multi-similarity", show_default=True)
@click.option("--backbone", type=RegistryChoice(_backbones), default="efficientnet-lite0", show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), help="Local pretrained state dict.")
@click.option("--pretrained/--no-pretrained", default=None, help="Default: pretrained when weights exist offline.")
@click.option("--freeze-backbone/--train-backbone", default=None,
              help="Train only the head on cached features (default for pretrained backbones).")
@click.option("--head", type=click.Choice(["linear", "mlp", "none"]), default="linear", show_default=True,
              help="none: no training at all, the pretrained backbone's own features (a model to index with "
                   "at once, and the baseline a trained model must beat).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--dim", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--m-per-class", type=click.IntRange(min=2), default=4, show_default=True)
@click.option("--lr", type=FiniteRange(min=0, min_open=True), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="in-domain", show_default=True,
              help="What the gate measures: in-domain (this catalogue: held-out photos of known products) "
                   "or class-disjoint (new arrivals: held-out products). Both are on the card.")
@click.option("--val-fraction", type=FiniteRange(0, 0.5, min_open=True), default=0.2, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--miner", type=click.Choice(["batch-hard", "semi-hard"]), default="batch-hard", show_default=True)
@click.option("--margin", type=FiniteRange(min=0), default=None)
@click.option("--time-budget", type=FiniteRange(min=0, min_open=True), default=None,
              help="Stop head training after N seconds.")
@click.option("--refit/--no-refit", default=True, show_default=True,
              help="Frozen backbone: after early stopping, retrain the head on every photo for the chosen "
                   "epochs (the card's metrics then describe the head before the refit, and say so).")
@click.option("--pool", type=click.Choice(POOLINGS), default="auto", show_default=True,
              help="How the backbone's maps become features: avg or gem of the last convolution's maps, or "
                   "stages (its average beside those of the three stages before it: texture and pattern; "
                   "EfficientNet-Lite, frozen backbone). auto: stages for a head on a frozen EfficientNet-Lite, "
                   "avg otherwise (--head none keeps the backbone's own features).")
@click.option("--init", type=click.Choice(HEAD_INITS), default="whiten", show_default=True,
              help="Where a linear head starts: whiten (the learned whitening of the catalogue, in closed "
                   "form: how a product's photos differ is damped, how products differ is kept) or pca (the "
                   "pretrained geometry). Early stopping may keep the start itself.")
@click.option("--head-reg", type=FiniteRange(min=0), default=0.0, show_default=True,
              help="Linear head: penalty pulling it toward its start.")
@click.option("--augment", type=click.Choice(AUGMENTATIONS + ("none",)), default="crop", show_default=True,
              help="Augmented views (a photo's own positives): random crops and mirror images, with or "
                   "without colour jitter.")
@click.option("--view-photos", type=click.Choice(["all", "single"]), default="all", show_default=True,
              help="Whose augmented views the head trains on: products with one photo, or every photo.")
@click.option("--max-view-photos", type=click.IntRange(min=0), default=VIEW_PHOTOS, show_default=True,
              help="Compute augmented views of at most N photos (0: all): beyond it every photo of the "
                   "one-photo products, then whole products in a seeded order, so a large catalogue's views "
                   "stop growing with it (about -0.009 R@1 at a quarter or a half of a catalogue).")
@click.option("--qe-k", type=click.IntRange(min=0), default=DEFAULT_RERANK.qe_k, show_default=True,
              help="Query expansion neighbours; the card records it only when it helps on the validation "
                   "queries beyond the bootstrap margin (0: never).")
@click.option("--dba-k", type=click.IntRange(min=0), default=DEFAULT_RERANK.dba_k, show_default=True,
              help="Database-side augmentation neighbours, recorded likewise only when it helps (0: never).")
@click.option("--cutoff-precision", type=FiniteRange(0.5, 1), default=DEFAULT_CUTOFF_PRECISION, show_default=True,
              help="The precision of a first page `--min-similarity auto` is calibrated for: the card records "
                   "the loosest similarity at which hits are the query's own product this often on the "
                   "validation queries (higher: fewer wrong hits, more right ones cut).")
@click.option("--train-blocks", type=click.IntRange(min=0), default=0, show_default=True,
              help="EfficientNet-Lite: fine-tune the last N blocks on cached early activations.")
@click.option("--views", type=click.IntRange(min=0), default=4, show_default=True,
              help="Augmented views cached per photo (head and its whitening start: of --view-photos; --train-blocks: "
                   "of every photo). 8: +0.003 R@1 on Grocery catalogues (288 px) for twice the time.")
@click.option("--backbone-lr", type=FiniteRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="With --train-blocks: learning rate of the fine-tuned blocks.")
@click.option("--resume", is_flag=True, help="Continue from MODEL.ckpt (fine-tuning).")
@click.option("--export/--no-export", "do_export", default=None,
              help="Write MODEL.onnx for ONNX Runtime (default: when onnx is installed).")
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
def train(data, from_index, out, as_json, resume, time_budget, do_export, **opts) -> None:
    """Train an encoder on a catalogue and write MODEL with its card.

    DATA: a folder with a sub-folder per product, or a catalogue JSONL (the manifest `esm ingest`
    reads: a line per product, `id`, `image` as a path/URL or a list of them, other fields).
    Each product is a class; its photos are positives of each other."""
    from ..model.runtime import installed
    from ..training.train import TrainConfig, train as run_train

    if bool(data) == bool(from_index):
        raise click.UsageError("give DATA (a folder or a catalogue JSONL) or --from-index INDEX, not both")
    s = Settings.from_env()
    cfg = TrainConfig(**opts, time_budget_s=time_budget, from_index=from_index,
                      device=resolve_device(s.device, "torch"))
    result = run_train(data, out, cfg, on_epoch=_echo_epoch, resume=resume, settings=s)
    card = result.card
    if do_export or (do_export is None and installed("onnx") and installed("onnxruntime")):
        from ..model.export import export_model
        card = {**card, "runtime": export_model(result.path)}
    if as_json:
        echo_json(card)
        return
    for line in card_lines(card, result.path):
        click.echo(line)


def _echo_epoch(row: dict) -> None:
    loss = f"{row['loss']:.4f}" if row["loss"] is not None else "-"
    val = f"{row['val_map_at_r']:.4f}" if row["val_map_at_r"] is not None else "not measured"
    click.echo(f"epoch {row['epoch']:>3}  loss {loss}  val MAP@R {val}  {row['seconds']:.1f} s", err=True)


@main.command()
@click.argument("data", required=False, type=click.Path(exists=True))
@click.option("--from-index", "from_index", metavar="INDEX", help="Evaluate on the photos of an index.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="Model file.")
@click.option("--baseline", help="A backbone name (raw features, cosine) or color-histogram.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Weights for --baseline.")
@click.option("--group-field", metavar="FIELD", help="Also measure group (category) precision@10.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--qe-k", type=click.IntRange(min=0), default=None,
              help="Query expansion neighbours, as `esm search --qe-k` (0: off). "
                   "Default: the model card's setting (none for --baseline).")
@click.option("--dba-k", type=click.IntRange(min=0), default=None,
              help="Database-side augmentation neighbours, as `esm dba` (0: off). Default: the card's.")
@click.option("--max-queries", type=click.IntRange(min=0), default=MAX_EVAL_QUERIES, show_default=True,
              help="Photos that query at most: beyond it, whole products in a seeded order (each "
                   "still searches every photo; the answer says so). 0: every photo.")
@click.option("--max-dba-photos", type=click.IntRange(min=0), default=RERANK_PHOTOS, show_default=True,
              help="With DBA (photos squared), photos searched at most: beyond it, every photo of "
                   "the query products and whole others in a seeded order (the baseline the same; "
                   "the answer says so). 0: every photo.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--report", type=click.Path(dir_okay=False), help="Write an HTML report here.")
def evaluate(data, from_index, model_path, baseline, weights, group_field, batch_size, qe_k, dba_k,
             max_queries, max_dba_photos, as_json, report) -> None:
    """Retrieval metrics on a catalogue (DATA: a folder with a sub-folder per product, or a
    catalogue JSONL; or --from-index): every photo of a product with two photos or more searches
    all the others, ranked as search ranks, the pretrained baseline beside it."""
    from ..training.catalogue_eval import evaluate_catalogue

    if bool(data) == bool(from_index):
        raise click.UsageError("give DATA (a folder or a catalogue JSONL) or --from-index INDEX, not both")
    result = evaluate_catalogue(data, Settings.from_env(), model_path=model_path, baseline=baseline,
                                weights=weights, from_index=from_index, group_field=group_field,
                                qe_k=qe_k, dba_k=dba_k, batch_size=batch_size, max_queries=max_queries,
                                max_dba_photos=max_dba_photos)
    metrics = result.metrics
    if report:
        from ..training.report import write_report
        write_report(report, metrics, result.model)
        metrics["report"] = str(report)
    if as_json:
        echo_json(metrics)
        return
    for line in evaluation_lines(metrics):
        click.echo(line)


@main.command("split")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="in-domain", show_default=True)
@click.option("--test-fraction", type=float, default=0.5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--exclude", multiple=True, help="Sub-folder to leave out (repeatable).")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="class-disjoint: K class folds (each class held out once); with --fold.")
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which fold's classes form the test part (0..K-1).")
def split_cmd(data_dir, out, protocol, test_fraction, seed, exclude, folds, fold) -> None:
    """Write OUT/train and OUT/test (symlinked image folders) under a protocol."""
    from ..training.data import class_folds, materialize, read_folder, split as split_samples

    folder = read_folder(data_dir, exclude=tuple(exclude))
    if folds:
        if protocol != "class-disjoint" or fold >= folds:
            raise click.UsageError("--folds needs --protocol class-disjoint and --fold < --folds")
        train_s, test_s = class_folds(folder.samples, folds, seed)[fold]
    else:
        train_s, test_s = split_samples(folder.samples, protocol, test_fraction, seed)
    n_train = materialize(train_s, Path(out) / "train")
    n_test = materialize(test_s, Path(out) / "test")
    click.echo(f"{protocol}: {n_train} train images ({len({s.cls for s in train_s})} classes), "
               f"{n_test} test images ({len({s.cls for s in test_s})} classes) in {out}"
               + (f"; {len(folder.skipped)} unusable image(s) left out" if folder.skipped else ""))


@main.group("model")
def model_group() -> None:
    """Inspect, export and benchmark model files."""


@model_group.command("export")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
def model_export(model_path) -> None:
    """Write MODEL.onnx (ONNX Runtime needs no torch); refused unless it matches torch."""
    from ..model.export import export_model

    rec = export_model(model_path)
    click.echo(f"wrote {rec['export']}  min cosine to torch {rec['parity_min_cosine']}  "
               f"in {rec['export_s']} s")


@model_group.command("bench")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Per runtime.")
@click.option("--json", "as_json", is_flag=True)
def model_bench(model_path, seconds, as_json) -> None:
    """Measure images/s of each runtime here; the card records the fastest (ESM_RUNTIME=auto)."""
    from ..model.export import bench_runtimes

    rec = bench_runtimes(model_path, seconds=seconds)
    if as_json:
        echo_json(rec)
        return
    for name, rate in rec["bench"]["images_per_s"].items():
        click.echo(f"{name:<12} {rate:>8.1f} images/s")
    click.echo(f"chosen: {rec['chosen']}  (batch {rec['bench']['batch']}, {rec['bench']['threads']} "
               f"threads, load average {rec['bench']['load_avg_1m']})")


@model_group.command("quantize")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--calib", "calib_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Your own images (any depth) to calibrate the int8 ranges on.")
@click.option("--val", "val_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Labelled validation folder (one sub-folder per class) for the gate.")
@click.option("--max-loss", type=FiniteRange(0, 1), default=0.01, show_default=True,
              help="Largest relative MAP@R loss of int8 vs the float export the gate accepts.")
@click.option("--calib-images", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--bench-seconds", type=FiniteRange(min=0.1), default=3.0, show_default=True,
              help="Per model: images/s of float vs int8.")
@click.option("--json", "as_json", is_flag=True)
def model_quantize(model_path, calib_dir, val_dir, max_loss, calib_images, bench_seconds,
                   as_json) -> None:
    """Write MODEL.int8.onnx (static int8, calibrated on --calib) only when its MAP@R on --val
    loses less than --max-loss to the float export; opt in with ESM_RUNTIME=onnxruntime-int8."""
    from ..training.quantize import QuantConfig, gate_line, quantize_model

    rec = quantize_model(model_path, calib_dir, val_dir,
                         QuantConfig(max_loss, calib_images, bench_seconds=bench_seconds))
    if as_json:
        echo_json(rec)
    else:
        click.echo(gate_line(rec))
        rates = rec["images_per_s"]
        click.echo(f"images/s: float {rates['float']}, int8 {rates['int8']}  "
                   f"(calibrated on {rec['calib_images']} images, {len(rec['calib_skipped'])} skipped; "
                   f"validated on {rec['val_images']}; kept in float: {rec['kept_float'] or 'nothing'})")
    if not rec["passed"]:
        raise ModelError(gate_line(rec) + "; nothing written, the float export stays in use",
                         hint="more or more typical --calib images, or keep the float export")
    if not as_json:
        click.echo(f"wrote {rec['written']}; use it with ESM_RUNTIME=onnxruntime-int8 on every node "
                   f"(an index made under it holds int8 vectors only)")
        if rec["images_per_s"]["int8"] < rec["images_per_s"]["float"]:
            click.echo("note: int8 is slower than the float export on this machine (int8 kernels "
                       "gain on CPUs with VNNI); the float export stays the faster choice here")


@model_group.command("show")
@click.argument("model_path", type=click.Path(dir_okay=False))
def model_show(model_path) -> None:
    """Print a model's card (backbone, dims, similarity, metrics, provenance) as JSON."""

    card = read_card(model_path)
    card.get("training", {}).pop("history", None)
    click.echo(json.dumps(card, indent=2, default=str))
