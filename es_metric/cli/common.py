"""Helpers shared by the CLI commands."""
from __future__ import annotations

import json
import math
from functools import cached_property
from typing import Callable, Iterable

import click

from ..config import Settings


def settings() -> Settings:
    return Settings.from_env()


class Cluster:
    """``with Cluster() as (s, es):`` settings and a client, transport errors made clear."""

    def __enter__(self):
        from ..index.client import cluster_errors, make_client

        self.settings = settings()
        self._errors = cluster_errors(self.settings)
        self._errors.__enter__()
        return self.settings, make_client(self.settings)

    def __exit__(self, *exc):
        return self._errors.__exit__(*exc)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=None, default=str))


class RegistryChoice(click.Choice):
    """A choice among the names of a registry that lives in a heavy module (torch): the names are
    loaded when a value is checked or the command's own help is shown, not when ``esm`` starts."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load
        self.case_sensitive = True

    @cached_property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(sorted(self._load()))


class FiniteRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf (FloatRange lets nan through: every
    comparison with it is false), e.g. ``--bench-seconds inf`` would never end."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv
