"""ESM_DEVICE: the choice of device is pure and tested here on a CPU-only machine."""
import pytest

from es_metric.config import Settings
from es_metric.device import batch_size_for, ort_providers, parse_device, pick_device, resolve_device
from es_metric.errors import ConfigError


@pytest.mark.parametrize("requested,gpus,expected", [
    ("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 2, "cpu"), ("cpu", 0, "cpu"),
    ("cuda", 1, "cuda:0"), ("cuda:1", 2, "cuda:1"), ("CUDA:0", 1, "cuda:0"), (" Auto ", 1, "cuda:0"),
])
def test_pick_device(requested, gpus, expected):
    assert pick_device(requested, gpus) == expected


@pytest.mark.parametrize("requested,gpus", [("cuda", 0), ("cuda:1", 1), ("cuda:0", 0)])
def test_a_missing_gpu_is_an_error_not_a_silent_cpu(requested, gpus):
    with pytest.raises(ConfigError, match="GPU"):
        pick_device(requested, gpus)


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cuda:0;rm -rf /", "mps", "cuda:123"])
def test_parse_device_refuses_anything_else(value):
    with pytest.raises(ConfigError, match="ESM_DEVICE"):
        parse_device(value)


def test_settings_read_esm_device_and_runtime():
    s = Settings.from_env({"ESM_DEVICE": "cuda:1", "ESM_RUNTIME": "onnxruntime"})
    assert (s.device, s.runtime) == ("cuda:1", "onnxruntime")
    assert Settings.from_env({}).device == "auto" and Settings.from_env({}).runtime == "auto"
    env = s.as_env()
    assert (env["ESM_DEVICE"], env["ESM_RUNTIME"]) == ("cuda:1", "onnxruntime")
    with pytest.raises(ConfigError, match="ESM_DEVICE"):
        Settings.from_env({"ESM_DEVICE": "tpu"})
    with pytest.raises(ConfigError, match="ESM_RUNTIME"):
        Settings.from_env({"ESM_RUNTIME": "tensorrt"})


def test_this_machine_resolves_auto_to_what_torch_sees():
    import torch

    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", "torch") == expected
    assert resolve_device("cpu", "onnxruntime") == "cpu"


def test_providers_and_batch_follow_the_device():
    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    assert ort_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert batch_size_for("cuda:0") > batch_size_for("cpu")
