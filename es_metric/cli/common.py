"""Helpers shared by the CLI commands."""
from __future__ import annotations

import json

import click

from ..config import Settings
from ..index.client import cluster_errors, make_client


def settings() -> Settings:
    return Settings.from_env()


class Cluster:
    """``with Cluster() as (s, es):`` settings and a client, transport errors made clear."""

    def __enter__(self):
        self.settings = settings()
        self._errors = cluster_errors(self.settings)
        self._errors.__enter__()
        return self.settings, make_client(self.settings)

    def __exit__(self, *exc):
        return self._errors.__exit__(*exc)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=None, default=str))
