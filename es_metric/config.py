"""Settings: one frozen object built from ``ESM_*`` environment variables, passed explicitly."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from .device import parse_device
from .errors import ConfigError
from .redact import redact_url, url_password
from .settingspec import FLAG, LIST, PATH, PATHS, Kind, choice, default_of, integer, setting, spec_of, table
from .urlguard import AllowList

__all__ = ["cache_dir_from_env", "DEFAULT_ES_PORT", "DEFAULT_REDIS_PORT", "ENV_NAMES", "FIELD_ENV",
           "progress_from_env", "Settings", "settings_table"]

DEFAULT_ES_PORT = 9200
DEFAULT_REDIS_PORT = 6379


def _default_stack_dir() -> Path:
    # Elasticsearch runs as a dedicated unprivileged user, which cannot enter /root: when we are
    # root, keep the stack's files in a system location that user can own.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/es-metric")
    return Path.home() / ".local" / "state" / "es-metric"


def _service_url(url_var: str, port_var: str, external: str, local: str, port: int) -> Any:
    """``es_url``/``redis_url``: the URL given (an external service), else the local stack's port."""
    read_port = integer().parse

    def read(env: Mapping[str, str]) -> str:
        url = (env.get(url_var) or "").rstrip("/")
        local_port = read_port(port_var, env[port_var]) if env.get(port_var) else port
        return url or local.format(port=local_port)

    def write(settings: "Settings", url: str) -> dict[str, str]:
        given = url if getattr(settings, external) else ""
        return {url_var: given, port_var: str(urlparse(url).port or port)}
    return read, write


_ES = _service_url("ESM_ES_URL", "ESM_ES_PORT", "es_external", "http://127.0.0.1:{port}", DEFAULT_ES_PORT)
_REDIS = _service_url("ESM_REDIS_URL", "ESM_REDIS_PORT", "redis_external", "redis://127.0.0.1:{port}/0",
                      DEFAULT_REDIS_PORT)
_RUNTIMES = ("auto", "torch", "onnxruntime", "onnxruntime-int8")


def _allow_list(name: str, raw: str) -> tuple[str, ...]:
    entries = LIST.parse(name, raw)
    AllowList.parse(entries)  # ConfigError now, not in a worker later
    return entries


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything configurable, each field declared once: its ``ESM_*`` variable(s), reading,
    default and meaning (``make settings-table`` writes the docs' table from these declarations).

    ``repr`` leaves out passwords and API keys and masks the passwords inside URLs."""

    es_url: str = setting(
        ("ESM_ES_URL", "ESM_ES_PORT"), "an existing cluster: nothing is provisioned; else the local "
        "stack's node on `ESM_ES_PORT` (with `ESM_STACK_DIR`, several stacks run side by side; test "
        "nodes move with `ESM_ES_PORT`)", default=f"http://127.0.0.1:{DEFAULT_ES_PORT}",
        shown=f"`http://127.0.0.1:{DEFAULT_ES_PORT}` (local stack)", read=_ES[0], write=_ES[1])
    es_external: bool = setting("ESM_ES_URL", "", default=False, derived=True,
                                read=lambda env: bool(env.get("ESM_ES_URL")))
    es_api_key: str | None = setting("ESM_ES_API_KEY", "API key for your cluster", secret=True)
    es_user: str | None = setting("ESM_ES_USER", "user for your cluster (with `ESM_ES_PASSWORD`)")
    es_password: str | None = setting("ESM_ES_PASSWORD", "password of `ESM_ES_USER`", secret=True)
    es_ca_file: str | None = setting("ESM_ES_CA_FILE", "CA certificate (PEM) of your cluster's TLS")
    es_request_timeout: int = setting("ESM_ES_TIMEOUT", "seconds a request to Elasticsearch may take",
                                      default=30, kind=integer())
    redis_url: str = setting(
        ("ESM_REDIS_URL", "ESM_REDIS_PORT"), "broker and result backend: your Redis, else the local "
        "stack's on `ESM_REDIS_PORT`", default=f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0",
        shown=f"`redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0` (local stack)", read=_REDIS[0], write=_REDIS[1])
    redis_external: bool = setting("ESM_REDIS_URL", "", default=False, derived=True,
                                   read=lambda env: bool(env.get("ESM_REDIS_URL")))
    stack_dir: Path = setting("ESM_STACK_DIR", "where the local stack keeps its files", kind=PATH,
                              factory=_default_stack_dir,
                              shown="`/var/lib/es-metric` (root), else `~/.local/state/es-metric`")
    es_heap: str = setting("ESM_ES_HEAP", "heap of the local Elasticsearch node", default="1g",
                           worker=False)
    es_java_home: str | None = setting("ESM_ES_JAVA_HOME", "Java of the local Elasticsearch node",
                                       shown="newest fitting JDK in `/usr/lib/jvm`", worker=False)
    worker_concurrency: int = setting(
        "ESM_WORKER_CONCURRENCY", "worker processes (`esm stack up --concurrency N`), each with cores "
        "/ N model threads: one process per core decodes beside its model instead of taking turns "
        "with it (bench/embed.py, ONNX Runtime: 0.93 of the bare forward with 2 processes on 2 cores, "
        "0.78 with 1)", factory=lambda: os.cpu_count() or 1, shown="the number of cores", kind=integer())
    worker_queue: str = setting("ESM_QUEUE", "the Celery queue the CLI sends to and the worker consumes "
                                "(several stacks side by side use several)", default="esm")
    batch_size: int = setting("ESM_BATCH_SIZE", "images per Celery task (decoded and embedded together)",
                              default=32, kind=integer())
    image_roots: tuple[Path, ...] = setting(
        "ESM_IMAGE_ROOTS", "folders (`:`-separated) the workers and the image endpoint may read, besides "
        "the folders recorded for each index at ingest (see [Which files are read]"
        "(security.md#which-files-are-read))", default=(),
        shown="–", kind=PATHS)
    max_image_pixels: int = setting("ESM_MAX_IMAGE_PIXELS", "decompression-bomb limit: pixels of one image",
                                    default=40_000_000, shown="40 M", kind=integer())
    max_image_bytes: int = setting("ESM_MAX_IMAGE_BYTES", "bytes of one image file or download",
                                   default=50 * 1024 * 1024, shown="50 MB", kind=integer())
    failures_index: str = setting("ESM_FAILURES_INDEX", "the index holding dead-letter records "
                                  "(`esm failures`)", default="esm-failures")
    api_key: str | None = setting("ESM_API_KEY", "HTTP API key (`X-API-Key`)", secret=True, worker=False)
    max_upload_bytes: int = setting(
        "ESM_MAX_UPLOAD_BYTES", "HTTP API upload limit (the request body may be 64 KiB more, for the form "
        "fields)", default=10 * 1024 * 1024, shown="10 MB", kind=integer(), worker=False)
    search_concurrency: int = setting(
        "ESM_SEARCH_CONCURRENCY", "HTTP API: searches running at once", kind=integer(), worker=False,
        factory=lambda: min(4, os.cpu_count() or 1), shown="min(4, cores)")
    search_queue: int = setting("ESM_SEARCH_QUEUE", "HTTP API: searches waiting beyond those running "
                                "(then 503)", default=32, kind=integer(0), worker=False)
    stall_seconds: float = setting(
        "ESM_STALL_SECONDS", "`esm ingest --wait` and `esm reindex` give up on a job after this long "
        "without progress when none of its tasks is queued or running", default=120, kind=integer(),
        worker=False)
    cache_dir: Path = setting("ESM_CACHE_DIR", "feature, activation and image-check caches of training "
                              "and evaluation", factory=lambda: Path.home() / ".cache" / "es-metric", kind=PATH,
                              shown="`~/.cache/es-metric`", worker=False)
    progress: bool | None = setting("ESM_PROGRESS", "progress bars: `0`, `false` or `no` turn them off "
                                    "(and the log lines), anything else on", shown="on when stderr is a "
                                    "terminal; else a log line every 30 s", kind=FLAG, worker=False)
    device: str = setting(
        "ESM_DEVICE", "where the encoder runs for workers, training (backbone features) and query by "
        "image: `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU the runtime sees, else the CPU). A "
        "GPU asked for but not visible is an error, never a silent CPU", default="auto",
        kind=Kind(lambda name, raw: parse_device(raw)))
    runtime: str = setting(
        "ESM_RUNTIME", "`torch`, `onnxruntime`, `onnxruntime-int8`, or `auto`: ONNX Runtime when the "
        "model has an export (`MODEL.onnx`) and onnxruntime is installed, unless `esm model bench` "
        "measured torch faster here (workers only: a query by image takes the export whenever it is "
        "usable); torch otherwise. `onnxruntime-int8` (never chosen by `auto`) runs the gated "
        "`MODEL.int8.onnx` (see [Inference runtime](runtime.md))", default="auto", kind=choice(*_RUNTIMES))
    url_allow: tuple[str, ...] = setting(
        "ESM_URL_ALLOW", "hosts, `host:port` pairs or CIDRs (`,`-separated) that image URLs may reach "
        "although private, loopback or link-local (see [Image URLs](security.md#image-urls))", default=(),
        shown="–",
        kind=Kind(_allow_list, LIST.format))
    url_timeout: int = setting("ESM_URL_TIMEOUT", "image URLs: read timeout in seconds (the whole fetch, "
                               "redirects and retries included, gets 3x)", default=10, kind=integer())
    url_per_host: int = setting("ESM_URL_PER_HOST", "image URLs: fetches at a time per host and worker "
                                "process", default=4, kind=integer())

    metrics_dir: Path | None = setting(
        "ESM_METRICS_DIR", "the workers' Prometheus files (prometheus_client multiprocess mode): each "
        "worker process writes its counters and histograms there, the API on the same host reads "
        "them; emptied when a worker starts", kind=PATH, shown="`$ESM_STACK_DIR/metrics/<queue>`")
    worker_metrics_port: int = setting(
        "ESM_WORKER_METRICS_PORT", "a worker serves its host's worker metrics on this port "
        "(`/metrics`): how workers on other hosts are scraped; 0: off (the API on the worker's host "
        "shows them)", default=0, kind=integer(0))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        kw = {f.name: spec_of(f).value(env, default_of(f)) for f in fields(cls)}
        if kw["es_user"] and not kw["es_password"]:
            raise ConfigError("ESM_ES_USER is set but ESM_ES_PASSWORD is not",
                              hint="set both, or use ESM_ES_API_KEY")
        return cls(**kw)

    def __repr__(self) -> str:
        shown = (f"{f.name}={redact_url(v) if f.name.endswith('_url') else v!r}"
                 for f in fields(self) if f.repr for v in [getattr(self, f.name)])
        return f"Settings({', '.join(shown)})"

    def secrets(self) -> tuple[str, ...]:
        """Every secret these settings hold: what must never appear in output or logs."""
        found = (self.es_password, self.es_api_key, self.api_key,
                 url_password(self.es_url), url_password(self.redis_url))
        return tuple(s for s in found if s)

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed (Settings is frozen)."""
        return replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The ``ESM_*`` variables that rebuild these settings in a worker process."""
        env: dict[str, str] = {}
        for f in fields(self):
            if spec_of(f).worker:
                env.update(spec_of(f).env(self, getattr(self, f.name)))
        return env

    @property
    def worker_metrics_dir(self) -> Path:
        return self.metrics_dir or self.stack_dir / "metrics" / self.worker_queue

    @property
    def es_port(self) -> int:
        return urlparse(self.es_url).port or DEFAULT_ES_PORT

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or DEFAULT_REDIS_PORT


def _one(name: str, env: Mapping[str, str] | None) -> Any:
    """One setting read alone (so a bad unrelated setting does not stop, say, training)."""
    f = next(f for f in fields(Settings) if f.name == name)
    return spec_of(f).value(os.environ if env is None else env, default_of(f))


def cache_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """``ESM_CACHE_DIR``: feature and image-check caches."""
    return _one("cache_dir", env)


def progress_from_env(env: Mapping[str, str] | None = None) -> bool | None:
    """``ESM_PROGRESS``; unset (None): when stderr is a terminal."""
    return _one("progress", env)


#: The ``ESM_*`` variables behind each Settings field.
FIELD_ENV: dict[str, tuple[str, ...]] = {f.name: spec_of(f).variables for f in fields(Settings)}
#: Every environment variable Settings reads; docker-compose must only use these.
ENV_NAMES = tuple(dict.fromkeys(name for names in FIELD_ENV.values() for name in names))


def settings_table() -> str:
    """The markdown table of every setting, as the docs show it (``make settings-table``)."""
    return table([spec_of(f) for f in fields(Settings)])
