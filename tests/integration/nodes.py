"""Extra local Elasticsearch nodes for the security and fault tests: a node with security and
TLS on, and the nodes of a two-node cluster.

Same installation as the dev node, its own config dir (ES_PATH_CONF), data dir and ports;
certificates from a throw-away CA made here with openssl; a file-realm superuser.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from es_metric.config import Settings
from es_metric.stack.es_node import ES_USER, _chown_tree, _service_user, es_home, find_java_home
from es_metric.stack.procs import identity, read_pid, stop_pid

USER, PASSWORD = "esm_admin", "correct-horse-battery-staple-42"


@dataclass
class Launched:
    """An extra node's process, with the identity it had when its launcher returned.

    Stopping checks that identity (start ticks since boot), as `esm stack` does for its own
    node, not the pid file's age: this machine is a VM that is paused and resumed, and a resume
    steps the wall clock (and /proc/stat's btime) forward, so a live node's start computed from
    btime can land after the time its pid file was written, and the node would not be stopped."""
    pidfile: Path
    pid: int | None
    ident: dict | None

    def stop(self, timeout: float = 60) -> bool:
        return stop_pid(self.pid, signal.SIGTERM, timeout, recorded=self.ident, pidfile=self.pidfile)


@dataclass
class SecureNode:
    url: str
    ca_file: str
    user: str
    password: str
    proc: Launched
    stack: Settings  # the test stack's settings: its Redis and queue, whatever their ports

    def settings(self, **kw) -> Settings:
        base = dict(es_url=self.url, es_external=True, es_ca_file=self.ca_file)
        base.update(kw)
        return self.stack.with_(**base)

    def stop(self) -> None:
        self.proc.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A CA and a node certificate for 127.0.0.1 / localhost, signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=esm-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "node.key", "-out", "node.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "node.crt", cwd=d)


def _as_service_user(cmd: list[str], env: dict, stdin: str | None = None) -> None:
    if _service_user() is not None:
        cmd = ["runuser", "-u", ES_USER, "--", *cmd]
    subprocess.run(cmd, env=env, input=stdin, text=True, check=True, capture_output=True)


def prepare_node(settings: Settings, root: Path, yml: list[str], heap: str = "512m") -> dict:
    """Config, data and log dirs for an extra node of the dev installation; returns its env."""
    home = es_home(settings)
    conf, data, logs = (root / n for n in ("config", "data", "logs"))
    for d in (conf, data, logs):
        d.mkdir(parents=True, exist_ok=True)
    for name in ("jvm.options", "log4j2.properties", "users", "users_roles", "roles.yml", "role_mapping.yml"):
        shutil.copy(home / "config" / name, conf / name)
    (conf / "jvm.options.d").mkdir(exist_ok=True)
    (conf / "jvm.options.d" / "heap.options").write_text(f"-Xms{heap}\n-Xmx{heap}\n")
    (conf / "elasticsearch.yml").write_text("\n".join(
        ["network.host: 127.0.0.1", f"path.data: {data}", f"path.logs: {logs}",
         "cluster.routing.allocation.disk.threshold_enabled: false", *yml, ""]))
    return dict(os.environ, ES_PATH_CONF=str(conf), ES_JAVA_HOME=str(find_java_home(settings)))


def launch(settings: Settings, root: Path, env: dict) -> Launched:
    """Start the node as the service user (owning its files); returns its process (``-d``
    returns once the node runs and has written its pid file)."""
    _chown_tree(root, _service_user())
    os.chmod(root, 0o755)
    pidfile = root / "es.pid"
    _as_service_user([str(es_home(settings) / "bin" / "elasticsearch"), "-d", "-p", str(pidfile)], env)
    pid = read_pid(pidfile)
    return Launched(pidfile, pid, identity(pid))


def port_offset(settings: Settings) -> int:
    """Test nodes' ports move with the stack's own (ESM_ES_PORT), so that several stacks (say,
    one per checkout) can run their suites side by side on one machine."""
    return settings.es_port - 9200


def start_secure_node(settings: Settings, root: Path, http_port: int | None = None) -> SecureNode:
    certs = root / "config" / "certs"
    off = port_offset(settings)
    http_port = http_port or 9250 + off
    env = prepare_node(settings, root, [
        "cluster.name: esm-secure-test", "node.name: esm-secure", "discovery.type: single-node",
        f"http.port: {http_port}", f"transport.port: {9350 + off}-{9399 + off}",
        "xpack.security.enabled: true", "xpack.security.http.ssl.enabled: true",
        "xpack.security.http.ssl.key: certs/node.key", "xpack.security.http.ssl.certificate: certs/node.crt",
        "xpack.security.http.ssl.certificate_authorities: [certs/ca.crt]",
        "xpack.security.authc.api_key.enabled: true"])
    certs.mkdir(exist_ok=True)
    make_certs(certs)
    _chown_tree(root, _service_user())
    home = es_home(settings)
    _as_service_user([str(home / "bin" / "elasticsearch-keystore"), "create"], env)
    _as_service_user([str(home / "bin" / "elasticsearch-users"), "useradd", USER, "-p", PASSWORD,
                      "-r", "superuser"], env)
    node = SecureNode(f"https://127.0.0.1:{http_port}", str(certs / "ca.crt"), USER, PASSWORD,
                      launch(settings, root, env), settings)
    _wait(node, root / "logs")
    return node


def _wait(node: SecureNode, logs: Path, timeout: float = 180) -> None:
    from es_metric.index.client import cluster_health

    s = node.settings(es_user=node.user, es_password=node.password)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster_health(s) in ("yellow", "green"):
            return
        time.sleep(1)
    tail = "".join(p.read_text(errors="replace")[-3000:] for p in logs.glob("*.log"))
    node.stop()
    raise RuntimeError(f"the secure test node did not start:\n{tail}")
