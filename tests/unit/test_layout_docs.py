"""The documented layout (docs/architecture.md, between the layout markers) equals the tree: every
top-level folder, every package and module of es_metric/ and workers/ has a row, and every row
names a path that exists. A module added without a row, or a row left behind, fails."""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
CODE = ("es_metric", "workers")
HEADING = re.compile(r"^#{2,4} `([^`]+/)`")
ROW = re.compile(r"^\| `([^`]+)` \|")


def layout_section(text: str) -> list[str]:
    start, end = "<!-- layout:start -->", "<!-- layout:end -->"
    assert start in text and end in text, f"{PAGE.name} has no {start} ... {end} section"
    return text.split(start, 1)[1].split(end, 1)[0].splitlines()


def documented(lines: list[str]) -> set[str]:
    """Paths the section lists: a row before any heading is a top-level path; a row under a
    heading `pkg/` is pkg/<row>; a heading names its folder. Folders end with '/'."""
    paths: set[str] = set()
    base = ""
    for line in lines:
        if heading := HEADING.match(line):
            base = heading.group(1)
            paths.add(base)
        elif row := ROW.match(line):
            paths.add(base + row.group(1))
    return paths


def ignored_names(root: Path) -> list[str]:
    """Folder patterns .gitignore leaves out of the checkout (`/runs/`, `__pycache__/`, ...)."""
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    return [line.strip().strip("/") for line in lines if line.strip().endswith("/")]


def actual(root: Path) -> set[str]:
    """Top-level folders (not hidden except .ci, not ignored), and every folder and module of
    es_metric/ and workers/ (a package's __init__.py is documented by the package's heading)."""
    skip = ignored_names(root)

    def kept(name: str) -> bool:
        return not any(fnmatch.fnmatch(name, pattern) for pattern in skip)

    paths = {f"{p.name}/" for p in root.iterdir()
             if p.is_dir() and (not p.name.startswith(".") or p.name == ".ci") and kept(p.name)}
    for top in CODE:
        for path in (root / top).rglob("*"):
            rel = path.relative_to(root)
            if not all(kept(part) for part in rel.parts):
                continue
            if path.is_dir():
                paths.add(f"{rel.as_posix()}/")
            elif path.suffix == ".py" and (path.name != "__init__.py" or rel.parent == Path("es_metric")):
                paths.add(rel.as_posix())
    return paths


def _is_code(path: str) -> bool:
    return path.split("/", 1)[0] in CODE


def test_every_folder_and_module_is_documented():
    missing = actual(ROOT) - documented(layout_section(PAGE.read_text()))
    assert not missing, (f"not in the layout of docs/{PAGE.name} (add a row under its package's heading): "
                         f"{sorted(missing)}")


def test_every_documented_path_exists():
    listed = documented(layout_section(PAGE.read_text()))
    gone = sorted(p for p in listed if not (ROOT / p).exists())
    assert not gone, f"docs/{PAGE.name} lists paths that do not exist: {gone}"
    # rows of code may only name modules and folders (a typo such as `pipeline` without .py fails)
    odd = sorted(p for p in listed if _is_code(p) and not (p.endswith("/") or p.endswith(".py")))
    assert not odd, f"docs/{PAGE.name} lists code paths that are neither a folder nor a module: {odd}"


def test_a_new_module_without_a_row_is_found(tmp_path):
    """The check itself: a tree with one module more than the page lists fails, and a row for a
    module that is gone is found (a page that parses to nothing would pass the tests above)."""
    (tmp_path / "es_metric" / "search").mkdir(parents=True)
    (tmp_path / "es_metric" / "__init__.py").write_text("")
    (tmp_path / "es_metric" / "search" / "__init__.py").write_text("")
    (tmp_path / "es_metric" / "search" / "service.py").write_text("")
    (tmp_path / "es_metric" / "search" / "new.py").write_text("")
    (tmp_path / "workers").mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / ".gitignore").write_text("/runs/\n")
    page = """<!-- layout:start -->
| folder | what |
|---|---|
| `es_metric/` | the package |
| `workers/` | the entry |
### `es_metric/`: core
| `__init__.py` | the face |
### `es_metric/search/`: search
| `service.py` | searches |
| `gone.py` | removed |
<!-- layout:end -->"""
    listed = documented(layout_section(page))
    assert actual(tmp_path) - listed == {"es_metric/search/new.py"}
    assert sorted(p for p in listed if not (tmp_path / p).exists()) == ["es_metric/search/gone.py"]


def test_the_page_lists_what_the_tree_holds():
    """Not an empty match: the section parses to every package of the code."""
    listed = documented(layout_section(PAGE.read_text()))
    packages = {f"{p.parent.relative_to(ROOT).as_posix()}/" for p in (ROOT / "es_metric").rglob("__init__.py")}
    assert packages <= listed and "workers/celery_app.py" in listed
