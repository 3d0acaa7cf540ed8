"""Provision and start a real single-node Elasticsearch for local development and CI.

The server comes from Maven Central as the integ-test-zip distribution (fetched with Maven, so
the user's Maven settings and mirrors apply), is cached under ``<stack_dir>/dist``, unpacked
once, and run as a dedicated unprivileged user with a system JDK.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ..config import Settings
from ..errors import StackError
from ..redact import redact_url
from ..version import ES_VERSION
from .procs import pid_alive, read_pid, still_running
from .state import Component, load_state, remember

log = logging.getLogger(__name__)

ES_ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
ES_USER = "esm"
JVM_DIR = Path("/usr/lib/jvm")


def es_home(settings: Settings) -> Path:
    return settings.stack_dir / f"elasticsearch-{ES_VERSION}"


def es_log_file(settings: Settings) -> Path:
    return settings.stack_dir / "logs" / "es" / "esm-dev.log"


def _get(settings: Settings, path: str, timeout: float = 3.0) -> dict | None:
    """A plain GET against the local node (no client: this must work before install checks)."""
    try:
        with urllib.request.urlopen(settings.es_url + path, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def es_health(settings: Settings) -> str | None:
    """Cluster health colour, or None when no cluster answers."""
    if settings.es_external:
        from ..index.client import cluster_health
        return cluster_health(settings)
    body = _get(settings, "/_cluster/health")
    return body.get("status") if body else None


def es_node_info(settings: Settings) -> dict:
    if settings.es_external:
        from ..index.client import node_info
        return node_info(settings)
    body = _get(settings, "/_nodes/_local?filter_path=nodes.*.version,nodes.*.jvm.version") or {}
    for node in (body.get("nodes") or {}).values():
        return {"version": node.get("version"), "jvm": node.get("jvm", {}).get("version")}
    return {}


def find_java_home(settings: Settings) -> Path:
    """ESM_ES_JAVA_HOME, else the newest JDK in /usr/lib/jvm that this ES major runs on."""
    if settings.es_java_home:
        return Path(settings.es_java_home)
    candidates = []
    for home in JVM_DIR.glob("*") if JVM_DIR.exists() else []:
        release = home / "release"
        if home.is_symlink() or not release.exists() or not (home / "bin" / "java").exists():
            continue
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                major = int(line.split("=", 1)[1].strip('"').split(".")[0])
                candidates.append((major, str(home)))
    needed = 21 if int(ES_VERSION.split(".")[0]) >= 9 else 17
    usable = sorted(c for c in candidates if c[0] >= needed)
    if not usable:
        raise StackError(f"no Java {needed}+ found in {JVM_DIR}",
                         hint="install one (apt-get install openjdk-17-jdk-headless) "
                              "or set ESM_ES_JAVA_HOME")
    return Path(usable[-1][1])


def fetch_es_zip(settings: Settings) -> Path:
    """The cached distribution zip, fetched with Maven when missing."""
    dist = settings.stack_dir / "dist"
    target = dist / f"elasticsearch-{ES_VERSION}.zip"
    if target.exists():
        return target
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven (mvn) is needed to fetch Elasticsearch",
                         hint="apt-get install -y maven, or set ESM_ES_URL to an existing cluster")
    dist.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-q", "-B", "dependency:copy",
           f"-Dartifact={ES_ARTIFACT.format(version=ES_VERSION)}", f"-DoutputDirectory={dist}"]
    log.info("fetching Elasticsearch %s with Maven", ES_VERSION)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=dist)
    if proc.returncode != 0 or not target.exists():
        raise StackError(f"Maven could not fetch Elasticsearch {ES_VERSION}: "
                         f"{(proc.stdout + proc.stderr).strip()[-500:]}")
    return target


def _unzip(zip_path: Path, dest: Path) -> None:
    """Extract keeping Unix permission bits (zipfile alone drops the executable bit)."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            out = zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(out, mode)


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged user ES runs as when we are root (created when missing)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(ES_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", ES_USER], check=True)
        return pwd.getpwnam(ES_USER)


def _chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, user.pw_uid, user.pw_gid)


def install_es(settings: Settings) -> Path:
    """Unpack and configure the node under ``<stack_dir>``; idempotent."""
    home = es_home(settings)
    if not (home / "bin" / "elasticsearch").exists():
        zip_path = fetch_es_zip(settings)
        _unzip(zip_path, settings.stack_dir)
    data, logs = settings.stack_dir / "es-data", settings.stack_dir / "logs" / "es"
    for path in (data, logs):
        path.mkdir(parents=True, exist_ok=True)
    (home / "config" / "elasticsearch.yml").write_text(_es_yml(settings, data, logs))
    heap = home / "config" / "jvm.options.d" / "heap.options"
    heap.parent.mkdir(exist_ok=True)
    heap.write_text(f"-Xms{settings.es_heap}\n-Xmx{settings.es_heap}\n")
    user = _service_user()
    run = settings.stack_dir / "run"
    run.mkdir(parents=True, exist_ok=True)  # a fresh stack dir: the pid file goes here
    for path in (home, data, logs, run):
        _chown_tree(path, user)
    return home


def _es_yml(settings: Settings, data: Path, logs: Path) -> str:
    return "\n".join([
        "# written by `esm stack up`: a local development node. Security is OFF: never expose it.",
        "cluster.name: esm-dev",
        "node.name: esm-dev-node",
        "discovery.type: single-node",
        "network.host: 127.0.0.1",
        f"http.port: {settings.es_port}",
        "transport.port: 9300-9399",
        f"path.data: {data}",
        f"path.logs: {logs}",
        "xpack.security.enabled: false",
        "cluster.routing.allocation.disk.threshold_enabled: false",
        "action.destructive_requires_name: false",
        "",
    ])


def _log_tail(settings: Settings, lines: int = 30) -> str:
    path = es_log_file(settings)
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_es(settings: Settings) -> Component:
    """Start the node unless one answers already; wait for yellow health."""
    if es_health(settings):
        entry = load_state(settings).get("es", {})
        managed = still_running(entry.get("pid"), entry.get("identity"), settings.stack_dir / "run" / "es.pid")
        return Component("elasticsearch", True, managed, redact_url(settings.es_url), "already running")
    if settings.es_external:
        raise StackError(f"Elasticsearch at {redact_url(settings.es_url)} (ESM_ES_URL) does not answer",
                         hint="check the URL and credentials, or unset ESM_ES_URL")
    home = install_es(settings)
    java = find_java_home(settings)
    pidfile = settings.stack_dir / "run" / "es.pid"
    pidfile.unlink(missing_ok=True)
    env = dict(os.environ, ES_JAVA_HOME=str(java), ES_JAVA_OPTS="")
    cmd = [str(home / "bin" / "elasticsearch"), "-d", "-p", str(pidfile)]
    if _service_user() is not None:
        cmd = ["runuser", "-u", ES_USER, "--", *cmd]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"Elasticsearch failed to start (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-300:]}\n--- log tail ---\n{_log_tail(settings)}",
                         hint=f"full log: {es_log_file(settings)}")
    health = _wait_yellow(settings, pidfile, timeout=180)
    pid = read_pid(pidfile)
    remember(settings, "es", pid, java_home=str(java))
    return Component("elasticsearch", True, True, redact_url(settings.es_url),
                     f"started in {time.monotonic() - started:.0f} s, health {health}, "
                     f"JDK {java.name}", pid)


def _wait_yellow(settings: Settings, pidfile: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _get(settings, "/_cluster/health?wait_for_status=yellow&timeout=2s", timeout=5)
        if body and body.get("status") in ("yellow", "green"):
            return body["status"]
        pid = read_pid(pidfile)
        if pid is not None and not pid_alive(pid):
            break
        time.sleep(1)
    raise StackError("Elasticsearch did not reach yellow health\n--- log tail ---\n"
                     + _log_tail(settings), hint=f"full log: {es_log_file(settings)}")

