"""Every ``ESM_*`` variable is read by config.py and nowhere else, each changes Settings, and the
settings table of docs/configuration.md lists every one of them."""
from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import fields
from pathlib import Path

import pytest

from es_metric.config import ENV_NAMES, FIELD_ENV, Settings, settings_table
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


def test_without_a_terminal_long_work_logs_a_line_every_30_s(monkeypatch, caplog):
    """A log file (a service, CI, `esm train > log`) sees how far a 20-minute extraction is,
    every LOG_EVERY_S seconds of it; ESM_PROGRESS=0 silences that too."""
    import es_metric.progressbar as pb

    clock = iter(float(t) for t in range(0, 1000, 10))    # each item takes 10 s
    monkeypatch.setattr(pb.time, "monotonic", lambda: next(clock))
    monkeypatch.delenv("ESM_PROGRESS", raising=False)
    monkeypatch.setattr(pb.sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level("INFO", logger="es_metric.progress"):
        assert list(pb.progress_iter(range(9), "features")) == list(range(9))
    assert [r.getMessage() for r in caplog.records] == [
        "features: 3 of 9 (33 %), about 60 s left", "features: 6 of 9 (66 %), about 30 s left",
        "features: 9 of 9 (100 %), about 0 s left"]
    caplog.clear()
    clock = iter(float(t) for t in range(0, 1000, 10))
    monkeypatch.setenv("ESM_PROGRESS", "0")
    with caplog.at_level("INFO", logger="es_metric.progress"):
        assert list(pb.progress_iter(iter(range(9)), "features")) == list(range(9))
    assert caplog.records == []
    assert pb.status(1200, None, 150) == "1,200 done, 2 min so far"


def _table_script():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_settings_table_is_the_one_generated_from_the_declarations():
    script = _table_script()
    page = script.marked_page()
    text = page.read_text()
    assert script.rewritten(text, settings_table()) == text, \
        f"{page.name}'s settings table differs from es_metric/config.py: run `make settings-table`"


def test_the_table_check_fails_when_a_declaration_changes(tmp_path):
    script = _table_script()
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "configuration.md"
    page.write_text(f"intro\n{script.START}\n{settings_table()}{script.END}\nafter\n")
    assert script.marked_page(tmp_path) == page
    changed = settings_table().replace("images per Celery task", "photos per task")
    assert script.rewritten(page.read_text(), changed) != page.read_text()
    assert script.rewritten(page.read_text(), settings_table()) == page.read_text()


def test_the_table_lists_every_variable_once_per_setting():
    listed = ENV_NAME.findall(" ".join(row.split("|")[1] for row in settings_table().splitlines()[2:]))
    assert sorted(listed) == sorted(ENV_NAMES)


@pytest.mark.parametrize("name, value", [
    ("ESM_BATCH_SIZE", "many"), ("ESM_BATCH_SIZE", "0"), ("ESM_BATCH_SIZE", "-3"),
    ("ESM_BATCH_SIZE", "\u0663"), ("ESM_URL_TIMEOUT", "1e999"), ("ESM_ES_PORT", "92OO"),
    ("ESM_WORKER_CONCURRENCY", "4\n\x1b[31mred" + "x" * 5000), ("ESM_RUNTIME", "tensorflow\r\nX: y"),
    ("ESM_DEVICE", "tpu"), ("ESM_DEVICE", "cuda:\n\x1b" + "0" * 3000), ("ESM_URL_ALLOW", "300.1.2.3/99"),
])
def test_a_bad_value_is_one_short_clear_line(name, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert name in message and "\n" not in message and "\r" not in message and "\x1b" not in message
    assert len(message) < 200, message
