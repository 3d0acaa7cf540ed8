"""Write the settings table (from ``es_metric.config.Settings``' declarations) into the docs page
that holds the ``settings-table`` markers: ``python scripts/settings_table.py`` (``make
settings-table``); ``--check`` only says whether it is current (exit 1 when not)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's package, whatever the environment has installed
    sys.path.insert(0, str(ROOT))

from es_metric.config import settings_table  # noqa: E402

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def marked_page(root: Path = ROOT) -> Path:
    """The one page (README.md or docs/**/*.md) between whose markers the table lives."""
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    found = [p for p in pages if p.is_file() and START in p.read_text()]
    if len(found) != 1:
        raise SystemExit(f"expected one page with {START}, found {len(found)}: {found}")
    return found[0]


def rewritten(text: str, table: str) -> str:
    """``text`` with what lies between the markers replaced by ``table``."""
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{START} ... {END} not found in order")
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str]) -> int:
    page = marked_page()
    text = page.read_text()
    new = rewritten(text, settings_table())
    if new == text:
        return 0
    if "--check" in argv:
        print(f"{page.relative_to(ROOT)}: the settings table differs from es_metric/config.py; "
              "run `make settings-table`", file=sys.stderr)
        return 1
    page.write_text(new)
    print(f"wrote the settings table into {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
