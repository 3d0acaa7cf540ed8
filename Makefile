# es-metric: the two commands of the README are `make demo` and `make test`.
VENV ?= $(or $(ESM_VENV),$(HOME)/.cache/es-metric/venv)
export PATH := $(VENV)/bin:$(PATH)
export ESM_PROGRESS ?= 0
PYTEST_ARGS ?=

.PHONY: settings-table setup lint docs stack down status demo test test-unit test-integration bench experiments

setup:
	bash scripts/setup.sh

# ruff and mypy as configured in pyproject.toml (the checked files, strict modules, rules)
lint: setup
	python -m ruff check .
	python -m mypy

# the user docs (mkdocs.yml, docs/): --strict fails on a broken link or anchor, a page left out
# of the nav, a missing include; the site goes to site/ (git-ignored)
docs: setup
	NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --quiet
# the settings table of the docs, written from es_metric/config.py's declarations
settings-table:
	python scripts/settings_table.py

stack: setup
	esm stack up
	esm stack restart-worker   # the worker runs the code of this checkout

down:
	esm stack down

status:
	esm stack status

demo: stack
	bash scripts/demo.sh

test: lint docs stack
	python -m pytest $(PYTEST_ARGS)

test-unit: lint docs   # no service; the slow tests run in `make test`
	python -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

test-integration: stack
	python -m pytest tests/integration $(PYTEST_ARGS)

experiments:
	bash scripts/grocery_experiments.sh

bench: stack
	python bench/embed.py && python bench/ingest.py && python bench/knn.py --n 100000 && python bench/query.py --n 100000
