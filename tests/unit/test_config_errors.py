import pickle

import pytest

from es_metric.config import Settings
from es_metric.errors import ConfigError, EsmError, ImageError, MappingMismatch


def test_settings_defaults_and_env():
    s = Settings.from_env({})
    assert s.es_url == "http://127.0.0.1:9200" and not s.es_external and not s.redis_external
    s = Settings.from_env({"ESM_ES_URL": "https://es.example:9243/", "ESM_ES_API_KEY": "s3cr3t-key",
                           "ESM_REDIS_URL": "redis://r:6380/1", "ESM_BATCH_SIZE": "8"})
    assert s.es_url == "https://es.example:9243" and s.es_external and s.es_port == 9243
    assert s.redis_external and s.redis_port == 6380 and s.batch_size == 8
    assert "s3cr3t" not in repr(s)  # secrets stay out of logs


def test_settings_errors_are_clear():
    with pytest.raises(ConfigError, match="ESM_BATCH_SIZE"):
        Settings.from_env({"ESM_BATCH_SIZE": "many"})
    with pytest.raises(ConfigError, match="ESM_ES_PASSWORD"):
        Settings.from_env({"ESM_ES_USER": "elastic"})


@pytest.mark.parametrize("err", [
    EsmError("boom", hint="do x", index="i"),
    ImageError("bad", reason="corrupt_image", ref="/a.jpg"),
    MappingMismatch("dims differ", hint="reindex"),
])
def test_errors_pickle_with_fields(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err) and back.fields == err.fields
    if isinstance(err, ImageError):
        assert back.reason == "corrupt_image"


def test_a_second_local_stack_moves_its_ports_without_becoming_external():
    s = Settings.from_env({"ESM_ES_PORT": "10200", "ESM_REDIS_PORT": "6380"})
    assert s.es_url == "http://127.0.0.1:10200" and s.redis_url == "redis://127.0.0.1:6380/0"
    assert not s.es_external and not s.redis_external
    assert Settings.from_env(s.as_env()).redis_url == s.redis_url
