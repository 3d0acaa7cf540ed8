"""esm status, and `esm ingest --from-index --follow`: living beside an index the shop writes."""
from __future__ import annotations

import signal
import threading

import click

from .common import Cluster, echo_json
from .root import main


def follow(index: str, image_field: str, base_dir: str | None, poll: float, as_json: bool) -> None:
    """Run the follower until Ctrl-C or SIGTERM; one line per pass that queued something."""
    from ..ingest.follow import run_follower

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def on_pass(state, queued: int) -> None:
        if as_json:
            echo_json({"pass": state.passes, "queued": queued, "open_jobs": len(state.jobs),
                       "error": state.last_error})
        elif queued or state.last_error:
            click.echo(f"pass {state.passes}: {queued} queued, {len(state.jobs)} job(s) open"
                       + (f"; {state.last_error}" if state.last_error else ""), err=True)

    with Cluster() as (s, es):
        click.echo(f"following {index} (field {image_field!r}, every {poll:g} s); Ctrl-C stops",
                   err=True)
        try:
            state = run_follower(s, es, index, image_field, base_dir=base_dir, poll_s=poll,
                                 stop=stop, on_pass=on_pass)
        except KeyboardInterrupt:
            return
    click.echo(f"stopped after {state.passes} passes, {state.queued} documents queued", err=True)


@main.command()
@click.argument("index")
@click.option("--json", "as_json", is_flag=True)
def status(index: str, as_json: bool) -> None:
    """Documents of INDEX without a vector, the lag, the follower and any model change."""
    from ..ingest.status import index_status

    with Cluster() as (s, es):
        st = index_status(s, es, index)
    if as_json:
        echo_json(st)
        return
    f = st["follower"]
    click.echo(f"{st['index']} ({st['concrete']}): model {st['model_id']} in {st['vector_field']}; "
               f"{st['documents']} documents, {st['without_vector']} without a vector, "
               f"lag {st['lag_s']} s" + (f", {st['not_augmented']} not augmented (`esm dba {index}`)"
                                         if st.get("not_augmented") else ""))
    click.echo(f"follower: {f['state']} (field {f['image_field']!r}, {f['passes']} passes, "
               f"{f['queued']} queued, {f['open_jobs']} jobs open)"
               + (f"; last error: {f['last_error']}" if f["last_error"] else ""))
    if "migration" in st:
        m = st["migration"]
        click.echo(f"model change: {m['from_model']} -> {m['to_model']} ({m['state']}, "
                   f"{m['missing']} documents still missing {m['field']})")
