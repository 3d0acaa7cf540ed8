"""The pins that must agree: ES server version, Python client major, docker-compose, env names."""
import re
import tomllib
from pathlib import Path

import yaml

from es_metric.config import ENV_NAMES, Settings
from es_metric.ingest.celery_app import VISIBILITY_TIMEOUT, TASK_TIME_LIMIT, make_app
from es_metric.version import ES_VERSION

ROOT = Path(__file__).resolve().parents[2]


def test_client_major_matches_server_major():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [client] = [d for d in deps if d.startswith("elasticsearch")]
    lo, hi = re.search(r">=(\d+)[.\d]*,<(\d+)", client).groups()
    assert int(lo) == int(ES_VERSION.split(".")[0]) == int(hi) - 1
    import elasticsearch
    assert elasticsearch.__versionstr__.split(".")[0] == ES_VERSION.split(".")[0]


def test_docker_compose_agrees_with_code():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"elasticsearch", "redis", "worker"}
    assert services["elasticsearch"]["image"].endswith(f"elasticsearch:{ES_VERSION}")
    assert "127.0.0.1:9200:9200" in services["elasticsearch"]["ports"]
    assert "127.0.0.1:6379:6379" in services["redis"]["ports"]
    env = _interpolate(services["worker"]["environment"], {"ESM_DATA_DIR": "/data"})
    assert set(env) <= set(ENV_NAMES), f"unknown ESM_* names: {set(env) - set(ENV_NAMES)}"
    s = Settings.from_env(env)
    assert s.es_external and s.redis_external and s.worker_queue in services["worker"]["command"]
    assert "es_metric.ingest.celery_app" in services["worker"]["command"]
    assert all(services[name]["restart"] == "unless-stopped" for name in services)  # as the local supervisor


def _interpolate(value, env: dict):
    """docker compose's ${VAR}, ${VAR:-default} and ${VAR:?error} over a parsed compose file."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def test_compose_worker_sees_host_paths_where_the_cli_records_them():
    """The CLI records absolute host paths; the worker must find images and models at exactly
    those paths, and be allowed to read the images there (ESM_IMAGE_ROOTS = the mount)."""
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {"ESM_DATA_DIR": "/home/ana/shop/data", "ESM_MODEL_DIR": "/home/ana/shop/models"}
    worker = _interpolate(raw, env)["services"]["worker"]
    mounts = {}
    for volume in worker["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro" and target.startswith("/")
        mounts[source] = target
    assert mounts == {env["ESM_DATA_DIR"]: env["ESM_DATA_DIR"], env["ESM_MODEL_DIR"]: env["ESM_MODEL_DIR"]}
    roots = Settings.from_env(worker["environment"]).image_roots
    assert roots == (Path(env["ESM_DATA_DIR"]),)   # the only readable root is the data mount
    try:
        _interpolate(raw, {})
    except ValueError as exc:  # no silent default: compose refuses to start without the folders
        assert "ESM_DATA_DIR" in str(exc) or "ESM_MODEL_DIR" in str(exc)
    else:
        raise AssertionError("compose starts without ESM_DATA_DIR / ESM_MODEL_DIR")


def test_celery_reliability_settings():
    conf = make_app(Settings.from_env({})).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT > TASK_TIME_LIMIT
    assert conf.broker_connection_retry and conf.broker_connection_retry_on_startup
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False  # a running batch finishes
    assert 0 < conf.broker_transport_options["socket_timeout"] < TASK_TIME_LIMIT


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_wheel_holds_es_metric_only():
    """workers/ is the deployment entry of a checkout, not a top-level module name of the wheel."""
    wheel = _pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["es_metric"]
    assert all(target.startswith("es_metric/") for target in wheel.get("force-include", {}).values())
    shim = (ROOT / "workers" / "celery_app.py").read_text()
    assert "from es_metric.ingest.celery_app import app" in shim


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_extras_split_what_a_machine_needs():
    project = _pyproject()["project"]
    core, extras = _names(project["dependencies"]), project["optional-dependencies"]
    assert not core & {"torch", "torchvision", "fastapi", "matplotlib", "pytorch-metric-learning"}
    assert {"torch", "torchvision"} <= _names(extras["worker"])
    assert "es-metric[worker]" in extras["train"] and "pytorch-metric-learning" in _names(extras["train"])
    assert "fastapi" in _names(extras["web"]) and "torch" not in _names(extras["web"])
    assert "onnxruntime" in _names(extras["runtime"]) and "torch" not in _names(extras["runtime"])
    assert "es-metric[runtime]" in extras["worker"]
    assert set(extras) == {"worker", "runtime", "train", "web", "dev", "bench", "all"}
    assert extras["all"] == ["es-metric[worker,train,web,dev,bench]"]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert '-e ".[all]"' in setup  # make setup / test / demo install everything
