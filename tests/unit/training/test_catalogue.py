"""Training data from a shop's catalogue: JSONL lines and class folders become products; their
photos are positives, a group field a coarse level; one-photo products learn from their views."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from es_metric.config import Settings
from es_metric.errors import ConfigError
from es_metric.training.catalogue import group_value, read_catalogue
from es_metric.training.data import Sample
from es_metric.training.headdata import head_data


def write_catalogue(tiny_data: Path, tmp_path: Path, lines: list[dict]) -> Path:
    path = tmp_path / "catalogue.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def photos(tiny_data: Path, cls: int, n: int) -> list[str]:
    folder = sorted(p for p in tiny_data.iterdir() if p.is_dir())[cls]
    return [str(p) for p in sorted(folder.iterdir())[:n]]


def test_a_catalogue_jsonl_makes_products_of_its_lines(tiny_data, tmp_path):
    lines = [{"id": f"sku-{c}", "image": photos(tiny_data, c, 3), "title": f"t{c}",
              "category": ["Shapes", "Round" if c % 3 == 0 else "Other"]} for c in range(6)]
    lines.append({"id": "sku-one", "image": photos(tiny_data, 0, 8)[-1], "category": "Shapes > Round"})
    cat = read_catalogue(write_catalogue(tiny_data, tmp_path, lines), Settings.from_env(
        {"ESM_IMAGE_ROOTS": str(tiny_data)}), group_field="category")
    assert cat.n_products == 7 and len(cat.samples) == 6 * 3 + 1
    assert {s.cls for s in cat.samples if s.path in photos(tiny_data, 2, 3)} == {"sku-2"}
    assert cat.groups["sku-0"] == cat.groups["sku-one"] == "Shapes > Round"
    assert cat.groups["sku-1"] == "Shapes > Other"
    labels = {s.cls: s.label for s in cat.samples}
    assert len(set(labels.values())) == 7  # a label per product


def test_hostile_lines_are_refused_and_the_rest_trains(tiny_data, tmp_path):
    lines = [{"id": f"p{c}", "image": photos(tiny_data, c, 2)} for c in range(3)]
    lines += [{"id": "evil", "image": "/etc/passwd"}, {"id": "up", "image": "../../../etc/hosts"},
              {"id": {"$gt": 1}, "image": photos(tiny_data, 4, 1)}, "not an object"]
    cat = read_catalogue(write_catalogue(tiny_data, tmp_path, lines),
                         Settings.from_env({"ESM_IMAGE_ROOTS": str(tiny_data)}))
    assert cat.n_products == 3
    reasons = sorted(r["reason"] for r in cat.skipped_records())
    assert reasons == ["bad_id", "bad_line", "path_refused", "path_refused"]
    assert not any("passwd" in s.path for s in cat.samples)


def test_a_class_folder_is_a_catalogue_and_keeps_one_photo_products(tiny_data, tmp_path):
    root = tmp_path / "shop"
    for c in range(3):
        (root / f"p{c}").mkdir(parents=True)
        for p in photos(tiny_data, c, 1 if c == 2 else 3):
            (root / f"p{c}" / Path(p).name).write_bytes(Path(p).read_bytes())
    cat = read_catalogue(root, Settings.from_env())
    assert cat.n_products == 3 and len(cat.samples) == 7
    with pytest.raises(ConfigError, match="--group-field needs a catalogue JSONL"):
        read_catalogue(root, Settings.from_env(), group_field="category")


@pytest.mark.parametrize("value, group", [("Tops", "Tops"), (["Women", "Tops"], "Women > Tops"), (7, "7"),
                                          ({"a": 1}, None), (None, None), (True, None), ("  ", None)])
def test_a_group_is_a_plain_value_or_a_path(value, group):
    assert group_value(value) == group


def test_one_photo_products_take_part_through_their_views():
    samples = [Sample("a1", 0, "a"), Sample("a2", 0, "a"), Sample("b1", 1, "b"), Sample("c1", 2, "c")]
    feats = torch.arange(4.0).repeat(3, 1).T  # row i = [i, i, i]
    views = torch.full((2 * 2, 3), 9.0)       # 2 views of b1 and c1
    data = head_data(samples, feats, {"a": "g", "b": "g"}, views, view_rows=[2, 3])
    assert len(data) == 4 + 4
    # views follow their photos' products: b's view rows are b's positives, c's are c's
    assert data.labels.tolist() == [0, 0, 1, 2, 1, 2, 1, 2]
    # products a, b share group g; c has no group, so it is a group of its own
    g = data.groups.tolist()
    assert g[0] == g[1] == g[2] != g[3] and g[4:] == [g[2], g[3]] * 2


def test_auto_takes_a_category_field_most_products_have(tiny_data, tmp_path):
    settings = Settings.from_env({"ESM_IMAGE_ROOTS": str(tiny_data)})
    lines = [{"id": f"p{c}", "image": photos(tiny_data, c, 2), "category": f"k{c % 2}"} for c in range(6)]
    cat = read_catalogue(write_catalogue(tiny_data, tmp_path, lines), settings, group_field="auto")
    assert cat.group_field == "category" and set(cat.groups.values()) == {"k0", "k1"}
    assert read_catalogue(write_catalogue(tiny_data, tmp_path, lines), settings, group_field="none").groups == {}
    sparse = [{"id": f"p{c}", "image": photos(tiny_data, c, 2), **({"category": "x"} if c == 0 else {})}
              for c in range(6)]  # one product of six has one: not a grouping of the catalogue
    cat = read_catalogue(write_catalogue(tiny_data, tmp_path, sparse), settings, group_field="auto")
    assert cat.group_field is None and cat.groups == {}


def test_evaluate_a_catalogue_jsonl_with_the_baseline_beside_and_a_report(tiny_data, tiny_model, tmp_path,
                                                                          monkeypatch):
    """`esm evaluate CATALOGUE.jsonl --model M --report R`: every photo of a product with two or
    more queries the rest; the baseline on the same queries; the report draws both Recall@K curves
    and grids of the queries' neighbours."""
    from click.testing import CliRunner

    from es_metric.cli import main
    monkeypatch.setenv("ESM_IMAGE_ROOTS", str(tiny_data))
    lines = [{"id": f"sku-{c}", "image": photos(tiny_data, c, 4), "category": "A" if c < 3 else "B"}
             for c in range(6)]
    lines.append({"id": "single", "image": photos(tiny_data, 0, 8)[-1], "category": "A"})
    catalogue = write_catalogue(tiny_data, tmp_path, lines)
    report = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["evaluate", str(catalogue), "--model", str(tiny_model),
                                       "--group-field", "category", "--report", str(report), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["n_queries"] == 6 * 4          # the one-photo product is searched, never a query
    assert 0 < metrics["recall_at_1"] <= 1 and "baseline" in metrics
    assert 0 <= metrics["group_precision_at_10"] <= 1
    html = report.read_text()
    assert "Recall@K" in html and "baseline" in html and html.count("<img") >= 6


def test_evaluate_says_how_the_cards_cutoff_does_on_this_catalogue(tiny_data, tiny_model, tmp_path, monkeypatch):
    """`esm evaluate` checks the card's `--min-similarity auto` cut-off on the catalogue's photos:
    what it keeps of each first page, how precise that is against the card's target; a card
    without a usable cut-off gives none (a hand-edited value is not trusted)."""
    import copy

    from click.testing import CliRunner

    from es_metric.cli import main
    from es_metric.model.modelfile import load_model, save_model
    monkeypatch.setenv("ESM_IMAGE_ROOTS", str(tiny_data))
    catalogue = write_catalogue(tiny_data, tmp_path, [{"id": f"sku-{c}", "image": photos(tiny_data, c, 4)}
                                                       for c in range(6)])
    model = load_model(tiny_model)
    runs = {}
    for name, similarity in (("all", -1.0), ("none", 1.5), ("hostile", "0.5; drop"), ("nan", float("nan"))):
        card = copy.deepcopy(model.card)
        card["metrics"]["cutoff"] = {"similarity": similarity, "keep": "at least", "precision": 0.95, "k": 10}
        path = save_model(tmp_path / f"{name}.pt", model.encoder, card)
        result = CliRunner().invoke(main, ["evaluate", str(catalogue), "--model", str(path), "--json"])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout.strip().splitlines()[-1])["cutoff"]
    assert runs["all"]["kept"] == 24 * 10 and runs["all"]["emptied"] == 0 and runs["all"]["recall"] == 1.0
    precision = runs["all"]["precision"]        # the pages' own share of right hits: at most 3 of 10
    assert 0 < precision <= 0.3
    assert runs["none"]["kept"] == 0 and runs["none"]["precision"] is None and runs["none"]["emptied"] == 24
    assert runs["hostile"] is None and runs["nan"] is None
    report = tmp_path / "report.html"
    text = CliRunner().invoke(main, ["evaluate", str(catalogue), "--model", str(tmp_path / "all.pt"),
                                     "--report", str(report)]).output
    said = ("cut-off (--min-similarity auto, at least -1.0000): of the first 10 hits of 24 photos it keeps 240, "
            f"precision {precision:.3f} (the card's target 0.95), 100.0% of the right hits; 0 pages emptied")
    assert said in text and said.replace("'", "&#x27;") in report.read_text()


def test_evaluate_on_a_large_catalogue_queries_whole_products_up_to_a_bound(tiny_data, tiny_model, tmp_path,
                                                                            monkeypatch):
    """Evaluation costs queries x photos: beyond --max-queries, whole products in a seeded order
    query (model and baseline the same ones), every photo is still searched, and the answer
    says so; --max-queries 0 ranks them all."""
    from click.testing import CliRunner

    from es_metric.cli import main
    monkeypatch.setenv("ESM_IMAGE_ROOTS", str(tiny_data))
    catalogue = write_catalogue(tiny_data, tmp_path, [{"id": f"sku-{c}", "image": photos(tiny_data, c, 4)}
                                                       for c in range(6)])

    def run(*extra):
        result = CliRunner().invoke(main, ["evaluate", str(catalogue), "--model", str(tiny_model), *extra])
        assert result.exit_code == 0, result.output
        return result.output

    bounded = json.loads(run("--max-queries", "10", "--json").strip().splitlines()[-1])
    assert bounded["n_queries"] == 12 and bounded["baseline"]["n_queries"] == 12   # 3 products of 4
    assert bounded["n_classes"] == 6                                               # all still searched
    assert bounded["queries_sampled"].startswith("12 of 24 photos query (whole products")
    assert bounded == json.loads(run("--max-queries", "10", "--json").strip().splitlines()[-1])  # seeded
    every = json.loads(run("--max-queries", "0", "--json").strip().splitlines()[-1])
    assert every["n_queries"] == 24 and "queries_sampled" not in every
    assert "note: 12 of 24 photos query" in run("--max-queries", "10")
    for hostile in ("-1", "1e9", "ten", "10; rm -rf /"):                 # a usage error, nothing run
        refused = CliRunner().invoke(main, ["evaluate", str(catalogue), "--model", str(tiny_model),
                                            "--max-queries", hostile])
        assert refused.exit_code == 2 and "--max-queries" in refused.output and "Traceback" not in refused.output


def test_evaluate_with_dba_on_a_large_catalogue_searches_a_bounded_index(tiny_data, tiny_model, tmp_path,
                                                                         monkeypatch):
    """DBA blends every photo with its neighbours among all (photos squared): beyond
    --max-dba-photos the model and the baseline search every photo of the query products and
    whole other products in a seeded order, only those are embedded, and the answer says so;
    without DBA, or with 0, every photo is searched."""
    from click.testing import CliRunner

    from es_metric.cli import main
    from es_metric.training.catalogue_eval import dba_index, query_rows
    monkeypatch.setenv("ESM_IMAGE_ROOTS", str(tiny_data))
    catalogue = write_catalogue(tiny_data, tmp_path, [{"id": f"sku-{c}", "image": photos(tiny_data, c, 4)}
                                                       for c in range(6)])

    def run(*extra):
        result = CliRunner().invoke(main, ["evaluate", str(catalogue), "--model", str(tiny_model),
                                           "--max-queries", "8", *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def as_json(*extra):
        return json.loads(run(*extra, "--json").strip().splitlines()[-1])

    bounded = as_json("--dba-k", "2", "--max-dba-photos", "12")
    assert bounded["rerank"]["dba_k"] == 2
    assert bounded["n_queries"] == 8 and bounded["baseline"]["n_queries"] == 8      # 2 products of 4
    assert bounded["n_classes"] == 3 and bounded["baseline"]["n_classes"] == 3      # + 1 whole product
    assert bounded["index_sampled"].startswith("12 of 24 photos are searched (every photo of the query products")
    assert bounded["index_sampled"] == bounded["baseline"]["index_sampled"]
    assert bounded == as_json("--dba-k", "2", "--max-dba-photos", "12")            # seeded
    assert "note: 12 of 24 photos are searched" in run("--dba-k", "2", "--max-dba-photos", "12")
    for every in (as_json("--dba-k", "2", "--max-dba-photos", "0"), as_json("--max-dba-photos", "12")):
        assert every["n_classes"] == 6 and "index_sampled" not in every          # all, or no DBA
    assert as_json("--dba-k", "2", "--max-dba-photos", "0")["rerank"]["dba_k"] == 2

    cat = read_catalogue(catalogue, Settings.from_env())                           # the queries stay theirs
    queries = query_rows(cat, 8)
    sub, moved, note = dba_index(cat, queries, 12)
    assert note and len(sub.samples) == 12
    assert [sub.samples[i] for i in moved.rows] == [cat.samples[i] for i in queries.rows]
    assert dba_index(cat, queries, 24) == (cat, queries, None)
    for hostile in ("-1", "1e9", "ten", "10; rm -rf /"):                 # a usage error, nothing run
        refused = CliRunner().invoke(main, ["evaluate", str(catalogue), "--model", str(tiny_model),
                                            "--max-dba-photos", hostile])
        assert refused.exit_code == 2 and "--max-dba-photos" in refused.output and "Traceback" not in refused.output
