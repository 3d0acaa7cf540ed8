"""The test tiers hold: a test that uses the stack (or a browser) without its tier's marker
fails before the fixture runs, the markers are registered and strict, the unit tier leaves the
slow tests out, and CI runs Hypothesis derandomised."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parents[2]

GENERATED = '''
import pytest

@pytest.fixture
def built_on_stack(stack):
    return stack

def test_unmarked_asks_for_the_stack(stack):
    pass

def test_unmarked_asks_through_another_fixture(built_on_stack):
    pass

@pytest.mark.e2e
def test_e2e_only_asks_for_the_stack(stack):
    pass

def test_unmarked_asks_for_a_browser(browser):
    pass

@pytest.mark.integration
def test_marked_integration(built_on_stack):
    assert built_on_stack == "a stand-in stack"


def test_needs_nothing():
    pass
'''


def test_a_stack_test_without_its_marker_fails_before_the_fixture_runs(pytester):
    # the project's hooks and fixtures, with stand-ins that record whether they ran
    pytester.makeconftest('''
from tests.conftest import *  # noqa: F401,F403  (the guard under test)
import pytest

REACHED = []

@pytest.fixture(scope="session")
def stack():
    REACHED.append("stack")
    return "a stand-in stack"

@pytest.fixture
def browser():
    REACHED.append("browser")

def pytest_sessionfinish(session):
    print("fixtures reached:", REACHED)
''')
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n    e2e: x\n")
    pytester.makepyfile(test_generated=GENERATED)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=2, errors=4)  # failed at set-up
    result.stdout.fnmatch_lines([
        "*::test_unmarked_asks_for_the_stack uses the 'stack' fixture but is not marked 'integration': *",
        "*::test_unmarked_asks_through_another_fixture uses the 'stack' fixture but is not marked 'integration': *",
        "*::test_e2e_only_asks_for_the_stack uses the 'stack' fixture but is not marked 'integration': *",
        "*::test_unmarked_asks_for_a_browser uses the 'browser' fixture but is not marked 'e2e': *",
    ])
    # the refused tests never set the stack up: only the marked one did (the browser: never)
    assert "fixtures reached: ['stack']" in result.stdout.str()


def test_markers_are_registered_and_strict_and_the_unit_tier_leaves_slow_out():
    import tomllib

    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in pytest_ini["addopts"].split()
    registered = {line.split(":")[0] for line in pytest_ini["markers"]}
    assert {"integration", "e2e", "slow"} <= registered
    recipe = (ROOT / "Makefile").read_text().split("\ntest-unit:", 1)[1].split("\n\n", 1)[0]
    assert 'pytest tests/unit -m "not slow"' in recipe


def test_ci_runs_hypothesis_derandomised():
    ci = hypothesis_settings.get_profile("ci")
    assert ci.derandomize and ci.print_blob and ci.database is None and ci.deadline is None
    assert "export CI=" in (ROOT / ".ci" / "run").read_text()
    probe = ("import tests.conftest; from hypothesis import settings; "
             "print(settings.get_current_profile_name(), settings.default.derandomize)")
    for ci_value, loaded in (("1", "ci True"), ("true", "ci True"), (None, "default False")):
        env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci_value} if ci_value else {})
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        assert " ".join(out[-2:]) == loaded, (ci_value, out)
