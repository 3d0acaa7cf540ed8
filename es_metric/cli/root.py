"""The ``esm`` group: logging, and library errors turned into one clear line and an exit code."""
from __future__ import annotations

import logging
import sys

import click

from ..config import Settings
from ..errors import EsmError
from ..redact import install_log_filter, redact_text


def _secrets() -> tuple[str, ...]:
    """The secrets of the environment's settings (none when the settings do not parse)."""
    try:
        return Settings.from_env().secrets()
    except EsmError:
        return ()


class EsmGroup(click.Group):
    """Turns library errors into one line on stderr (secrets scrubbed) and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EsmError as exc:
            click.echo(f"error: {redact_text(str(exc), _secrets())}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=EsmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="es-metric")
def main(verbose: int) -> None:
    """es-metric: learned visual similarity search for an existing Elasticsearch stack."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    install_log_filter(_secrets())  # third-party debug lines (request/response dumps) included
    if verbose == 0:
        logging.getLogger("es_metric").setLevel(logging.INFO)
        for noisy in ("elastic_transport", "elasticsearch", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.ERROR)

