"""The kombu adapter without a broker: the version gate, what an unknown layout degrades to,
and task ids read from hostile messages."""
from __future__ import annotations

import json
import logging

import pytest

from es_metric.config import Settings
from es_metric.errors import BrokerUnsupported
from es_metric.ingest import broker
from es_metric.ingest.stall import Activity, stall_error


@pytest.mark.parametrize("version", ["5.3.0", "5.7.0", "5.7.1rc1"])
def test_the_versions_the_layout_was_written_for_pass(version):
    broker.check_version(version)


@pytest.mark.parametrize("version", ["5.2.7", "5.8.0", "6.0.0", "4.6.11", "garbage", ""])
def test_another_kombu_is_refused_with_one_clear_line(version):
    with pytest.raises(BrokerUnsupported) as caught:
        broker.check_version(version)
    assert f"kombu {version} is outside" in caught.value.message and "\n" not in str(caught.value)
    assert "WRITTEN_FOR" in caught.value.hint


def test_an_unknown_kombu_degrades_observers_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(broker, "installed_version", lambda name: "9.0.0")
    broker._installed.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=broker.__name__):
            assert broker.known_layout() is None and broker.known_layout() is None
        with pytest.raises(BrokerUnsupported):
            broker.redis_layout()
        with pytest.raises(BrokerUnsupported):
            broker.restore(object(), [b"tag"])
    finally:
        broker._installed.cache_clear()
    warned = [r for r in caplog.records if "kombu 9.0.0 is outside" in r.getMessage()]
    assert len(warned) == 1


def test_without_the_brokers_view_no_job_is_declared_dead():
    act = Activity(frozenset(), frozenset(), (), broker_seen=False)
    assert act.alive("j") and stall_error(Settings(), "j", (16, 8, 0), 500, act) is None
    assert stall_error(Settings(), "j", (16, 8, 0), 500, Activity(frozenset(), frozenset(), ())) is not None


def test_the_installed_layout_is_kombus_own():
    from kombu.transport.redis import Channel

    layout = broker.redis_layout()
    assert layout.unacked_key == Channel.unacked_key and layout.queue_keys("q")[0] == "q"
    assert len(layout.queue_keys("q")) == len(Channel.priority_steps)


@pytest.mark.parametrize("raw, expected", [
    (json.dumps({"headers": {"id": "job.3"}}), "job.3"),
    (json.dumps([{"headers": {"id": "job.4"}}, "", "esm"]), "job.4"),
    (json.dumps({"headers": {"id": 7}}), None), (json.dumps({"headers": None}), None),
    (json.dumps([]), None), (b"\xff\xfe", None), ("{", None), (json.dumps("text"), None),
])
def test_a_task_id_is_read_or_none(raw, expected):
    assert broker.task_id_of(raw) == expected
