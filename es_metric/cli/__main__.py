"""``python -m es_metric.cli``: the ``esm`` command."""
from . import main

main(prog_name="esm")
