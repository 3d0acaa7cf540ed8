"""Settings: one frozen object built from ``ESM_*`` environment variables, passed explicitly."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from .device import parse_device
from .errors import ConfigError
from .redact import redact_url, url_password
from .urlguard import AllowList

__all__ = ["cache_dir_from_env", "DEFAULT_ES_PORT", "DEFAULT_REDIS_PORT", "ENV_NAMES", "FIELD_ENV",
           "progress_from_env", "Settings"]

DEFAULT_ES_PORT = 9200
DEFAULT_REDIS_PORT = 6379


def _default_stack_dir() -> Path:
    # Elasticsearch runs as a dedicated unprivileged user, which cannot enter /root: when we are
    # root, keep the stack's files in a system location that user can own.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/es-metric")
    return Path.home() / ".local" / "state" / "es-metric"


def cache_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """``ESM_CACHE_DIR`` (default ``~/.cache/es-metric``): feature and image-check caches. Read
    alone, so training does not fail on an unrelated bad setting."""
    env = os.environ if env is None else env
    return Path(env.get("ESM_CACHE_DIR") or Path.home() / ".cache" / "es-metric")


def progress_from_env(env: Mapping[str, str] | None = None) -> bool | None:
    """``ESM_PROGRESS``: 0/false/no off, anything else on; unset (None): when stderr is a terminal."""
    flag = (os.environ if env is None else env).get("ESM_PROGRESS")
    return None if flag is None else flag not in ("0", "false", "no")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer", hint=f"set {name} to a number") from None


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything configurable. ``es_external``/``redis_external``: the user runs them, not us.

    ``repr`` leaves out passwords and API keys and masks the passwords inside URLs."""

    es_url: str = f"http://127.0.0.1:{DEFAULT_ES_PORT}"
    es_external: bool = False
    es_api_key: str | None = field(default=None, repr=False)
    es_user: str | None = None
    es_password: str | None = field(default=None, repr=False)
    es_ca_file: str | None = None
    es_request_timeout: int = 30
    redis_url: str = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
    redis_external: bool = False
    stack_dir: Path = field(default_factory=_default_stack_dir)
    es_heap: str = "1g"
    es_java_home: str | None = None
    worker_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    worker_queue: str = "esm"
    batch_size: int = 32
    image_roots: tuple[Path, ...] = ()
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    failures_index: str = "esm-failures"
    api_key: str | None = field(default=None, repr=False)
    max_upload_bytes: int = 10 * 1024 * 1024
    search_concurrency: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    search_queue: int = 32
    stall_seconds: float = 120  # `ingest --wait` and reindex give up on a job idle this long
    cache_dir: Path = field(default_factory=cache_dir_from_env)
    progress: bool | None = None  # progress bars; None: when stderr is a terminal
    device: str = "auto"    # where the encoder runs: cpu, cuda, cuda:N, auto (see device.py)
    runtime: str = "auto"   # torch, onnxruntime, auto (the card's measured choice; runtime.py)
    url_allow: tuple[str, ...] = ()  # hosts, host:port, CIDRs image URLs may reach though private
    url_timeout: int = 10            # seconds: read timeout of an image URL (x3: whole fetch)
    url_per_host: int = 4            # image URL fetches at a time per host and worker process

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        es_url = env.get("ESM_ES_URL") or ""
        redis_url = env.get("ESM_REDIS_URL") or ""
        es_port = _int(env, "ESM_ES_PORT", DEFAULT_ES_PORT)
        redis_port = _int(env, "ESM_REDIS_PORT", DEFAULT_REDIS_PORT)
        roots = tuple(Path(p).resolve() for p in (env.get("ESM_IMAGE_ROOTS") or "").split(os.pathsep) if p)
        kw: dict[str, Any] = dict(
            es_url=es_url.rstrip("/") or f"http://127.0.0.1:{es_port}",
            es_external=bool(es_url),
            es_api_key=env.get("ESM_ES_API_KEY") or None,
            es_user=env.get("ESM_ES_USER") or None,
            es_password=env.get("ESM_ES_PASSWORD") or None,
            es_ca_file=env.get("ESM_ES_CA_FILE") or None,
            es_request_timeout=_int(env, "ESM_ES_TIMEOUT", 30),
            redis_url=redis_url or f"redis://127.0.0.1:{redis_port}/0",
            redis_external=bool(redis_url),
            es_heap=env.get("ESM_ES_HEAP") or "1g",
            es_java_home=env.get("ESM_ES_JAVA_HOME") or None,
            worker_concurrency=_int(env, "ESM_WORKER_CONCURRENCY", os.cpu_count() or 1),
            worker_queue=env.get("ESM_QUEUE") or "esm",
            batch_size=_int(env, "ESM_BATCH_SIZE", 32),
            image_roots=roots,
            max_image_pixels=_int(env, "ESM_MAX_IMAGE_PIXELS", 40_000_000),
            max_image_bytes=_int(env, "ESM_MAX_IMAGE_BYTES", 50 * 1024 * 1024),
            failures_index=env.get("ESM_FAILURES_INDEX") or "esm-failures",
            api_key=env.get("ESM_API_KEY") or None,
            max_upload_bytes=_int(env, "ESM_MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
            search_concurrency=_int(env, "ESM_SEARCH_CONCURRENCY", min(4, os.cpu_count() or 1)),
            search_queue=_int(env, "ESM_SEARCH_QUEUE", 32),
            stall_seconds=_int(env, "ESM_STALL_SECONDS", 120),
            cache_dir=cache_dir_from_env(env),
            progress=progress_from_env(env),
            device=parse_device(env.get("ESM_DEVICE")),
            runtime=(env.get("ESM_RUNTIME") or "auto").strip().lower(),
            url_allow=tuple(e.strip() for e in (env.get("ESM_URL_ALLOW") or "").split(",") if e.strip()),
            url_timeout=_int(env, "ESM_URL_TIMEOUT", 10),
            url_per_host=_int(env, "ESM_URL_PER_HOST", 4),
        )
        AllowList.parse(kw["url_allow"])  # ConfigError now, not in a worker later
        if env.get("ESM_STACK_DIR"):
            kw["stack_dir"] = Path(env["ESM_STACK_DIR"])
        if kw["runtime"] not in ("auto", "torch", "onnxruntime", "onnxruntime-int8"):
            raise ConfigError(f"ESM_RUNTIME={kw['runtime']!r} is not a runtime",
                              hint="use auto, torch, onnxruntime or onnxruntime-int8")
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
        """The ``ESM_*`` variables that rebuild these settings in another process (a worker)."""
        env = {"ESM_ES_URL": self.es_url if self.es_external else "", "ESM_ES_PORT": str(self.es_port),
               "ESM_REDIS_URL": self.redis_url if self.redis_external else "",
               "ESM_REDIS_PORT": str(self.redis_port),
               "ESM_STACK_DIR": str(self.stack_dir), "ESM_QUEUE": self.worker_queue,
               "ESM_WORKER_CONCURRENCY": str(self.worker_concurrency),
               "ESM_BATCH_SIZE": str(self.batch_size), "ESM_FAILURES_INDEX": self.failures_index,
               "ESM_MAX_IMAGE_PIXELS": str(self.max_image_pixels),
               "ESM_MAX_IMAGE_BYTES": str(self.max_image_bytes),
               "ESM_ES_TIMEOUT": str(self.es_request_timeout),
               "ESM_DEVICE": self.device, "ESM_RUNTIME": self.runtime,
               "ESM_IMAGE_ROOTS": os.pathsep.join(str(r) for r in self.image_roots),
               "ESM_URL_ALLOW": ",".join(self.url_allow), "ESM_URL_TIMEOUT": str(self.url_timeout),
               "ESM_URL_PER_HOST": str(self.url_per_host)}
        for name, value in (("ESM_ES_API_KEY", self.es_api_key), ("ESM_ES_USER", self.es_user),
                            ("ESM_ES_PASSWORD", self.es_password), ("ESM_ES_CA_FILE", self.es_ca_file)):
            if value:
                env[name] = value
        return env

    @property
    def es_port(self) -> int:
        return urlparse(self.es_url).port or DEFAULT_ES_PORT

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or DEFAULT_REDIS_PORT


#: The ``ESM_*`` variables behind each Settings field (the README's settings table lists them all).
FIELD_ENV: dict[str, tuple[str, ...]] = {
    "es_url": ("ESM_ES_URL", "ESM_ES_PORT"), "es_external": ("ESM_ES_URL",),
    "es_api_key": ("ESM_ES_API_KEY",), "es_user": ("ESM_ES_USER",),
    "es_password": ("ESM_ES_PASSWORD",), "es_ca_file": ("ESM_ES_CA_FILE",),
    "es_request_timeout": ("ESM_ES_TIMEOUT",),
    "redis_url": ("ESM_REDIS_URL", "ESM_REDIS_PORT"), "redis_external": ("ESM_REDIS_URL",),
    "stack_dir": ("ESM_STACK_DIR",), "es_heap": ("ESM_ES_HEAP",), "es_java_home": ("ESM_ES_JAVA_HOME",),
    "worker_concurrency": ("ESM_WORKER_CONCURRENCY",), "worker_queue": ("ESM_QUEUE",),
    "batch_size": ("ESM_BATCH_SIZE",), "image_roots": ("ESM_IMAGE_ROOTS",),
    "max_image_pixels": ("ESM_MAX_IMAGE_PIXELS",), "max_image_bytes": ("ESM_MAX_IMAGE_BYTES",),
    "failures_index": ("ESM_FAILURES_INDEX",), "api_key": ("ESM_API_KEY",),
    "max_upload_bytes": ("ESM_MAX_UPLOAD_BYTES",), "search_concurrency": ("ESM_SEARCH_CONCURRENCY",),
    "search_queue": ("ESM_SEARCH_QUEUE",), "stall_seconds": ("ESM_STALL_SECONDS",),
    "cache_dir": ("ESM_CACHE_DIR",), "progress": ("ESM_PROGRESS",),
    "device": ("ESM_DEVICE",), "runtime": ("ESM_RUNTIME",),
    "url_allow": ("ESM_URL_ALLOW",), "url_timeout": ("ESM_URL_TIMEOUT",),
    "url_per_host": ("ESM_URL_PER_HOST",),
}
#: Every environment variable Settings reads; docker-compose must only use these.
ENV_NAMES = tuple(dict.fromkeys(name for names in FIELD_ENV.values() for name in names))
