"""Every ``ESM_*`` variable is read by config.py and nowhere else, each changes Settings, and the
settings table of docs/configuration.md lists every one of them."""
from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

from es_metric.config import ENV_NAMES, FIELD_ENV, Settings
from es_metric.errors import ConfigError
from es_metric.progressbar import enabled

ROOT = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"ESM_[A-Z0-9_]+")


def test_no_module_but_config_names_an_esm_variable():
    """An ``"ESM_..."`` string of its own (an environment lookup) appears only in config.py;
    messages and docstrings that mention a name are longer strings and do not count."""
    wrong = []
    for path in sorted((ROOT / "es_metric").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "es_metric":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and ENV_NAME.fullmatch(node.value):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert not wrong, "read these through es_metric.config.Settings:\n" + "\n".join(wrong)


def test_the_check_above_sees_an_environment_lookup():
    tree = ast.parse('import os\nos.environ.get("ESM_CACHE_DIR")\n')
    assert [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and ENV_NAME.fullmatch(n.value)] == ["ESM_CACHE_DIR"]


def test_every_settings_field_has_its_variables():
    assert set(FIELD_ENV) == {f.name for f in fields(Settings)}


SAMPLES = {"ESM_ES_URL": "https://es.example:9243", "ESM_REDIS_URL": "redis://r.example:6390/2",
           "ESM_STACK_DIR": "/srv/esm", "ESM_IMAGE_ROOTS": "/srv/photos", "ESM_CACHE_DIR": "/srv/cache",
           "ESM_PROGRESS": "0", "ESM_ES_HEAP": "2g", "ESM_ES_JAVA_HOME": "/opt/jdk"}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_every_variable_changes_the_settings(name):
    value = SAMPLES.get(name, "7")
    try:
        changed = Settings.from_env({name: value})
    except ConfigError as exc:  # read and refused on its own (a user without a password)
        assert name in str(exc)
        return
    assert changed != Settings.from_env({}), f"{name}={value} is not read"


def test_cache_dir_and_progress():
    s = Settings.from_env({"ESM_CACHE_DIR": "/srv/cache", "ESM_PROGRESS": "no"})
    assert s.cache_dir == Path("/srv/cache") and s.progress is False
    assert Settings.from_env({"ESM_PROGRESS": "1"}).progress is True
    assert Settings.from_env({}).progress is None


def test_progress_bars_follow_esm_progress(monkeypatch):
    monkeypatch.setenv("ESM_PROGRESS", "1")
    assert enabled()
    monkeypatch.setenv("ESM_PROGRESS", "false")
    assert not enabled()


SETTINGS_PAGE = ROOT / "docs" / "configuration.md"


def _settings_table() -> str:
    """The rows between the settings-table markers (the table may be generated between them)."""
    page = SETTINGS_PAGE.read_text()
    start, end = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
    assert start in page and end in page, f"{SETTINGS_PAGE.name} has no {start} ... {end} table"
    rows = [line for line in page.split(start, 1)[1].split(end, 1)[0].splitlines() if line.startswith("| `ESM_")]
    assert rows, f"{SETTINGS_PAGE.name} has no settings table"
    return "\n".join(rows)


def test_the_documented_settings_table_lists_every_variable():
    listed = set(ENV_NAME.findall(_settings_table()))
    assert set(ENV_NAMES) <= listed, f"missing from the settings table: {sorted(set(ENV_NAMES) - listed)}"
    assert listed <= set(ENV_NAMES), f"the settings table lists unknown variables: {sorted(listed - set(ENV_NAMES))}"
