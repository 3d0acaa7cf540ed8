"""``ESM_DEVICE``: where the encoder runs (cpu, cuda, cuda:N, auto), for workers, training and
the query path. The choice is pure (``pick_device``); what the machine has is asked only in
``resolve_device``, of torch or of ONNX Runtime, whichever runs the model."""
from __future__ import annotations

import importlib.util
import re

from .errors import ConfigError
from .settingspec import quoted

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
# Images per forward pass: what a CPU's caches like, and what keeps a GPU busy.
BATCH = {"cpu": 16, "cuda": 64}


def parse_device(value: str | None) -> str:
    """The normalised ``ESM_DEVICE`` value (default auto); anything else is refused."""
    value = (value or "auto").strip().lower()
    if not _DEVICE.match(value):
        raise ConfigError(f"ESM_DEVICE={quoted(value)} is not a device",
                          hint="use cpu, cuda, cuda:N (N = GPU number) or auto")
    return value


def pick_device(requested: str, gpus: int) -> str:
    """``cpu`` or ``cuda:N`` for ``requested`` on a machine with ``gpus`` visible GPUs. auto takes
    the first GPU when there is one; asking for a GPU that is not there is an error, never a
    silent fall-back to the CPU."""
    requested = parse_device(requested)
    if requested == "cpu" or (requested == "auto" and gpus == 0):
        return "cpu"
    index = 0 if requested in ("auto", "cuda") else int(requested.split(":")[1])
    if index >= gpus:
        raise ConfigError(f"ESM_DEVICE={requested} but {gpus} GPU(s) are visible",
                          hint="set ESM_DEVICE=cpu (or auto), or check the NVIDIA driver and "
                               "CUDA_VISIBLE_DEVICES")
    return f"cuda:{index}"


def visible_gpus(runtime: str) -> int:
    """GPUs the runtime can use: torch counts them; ONNX Runtime only says whether its CUDA
    provider is there (then GPU 0 is assumed, or torch's count when torch is present)."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return 0
        if importlib.util.find_spec("torch") is None:
            return 1
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(requested: str, runtime: str = "torch") -> str:
    """``requested`` made concrete on this machine (asks the runtime only when it must)."""
    requested = parse_device(requested)
    return "cpu" if requested == "cpu" else pick_device(requested, visible_gpus(runtime))


def ort_providers(device: str) -> list:
    """ONNX Runtime execution providers for a concrete device (CPU always as the fall-back)."""
    if device.startswith("cuda"):
        return [("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])}),
                "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def batch_size_for(device: str) -> int:
    return BATCH["cuda" if device.startswith("cuda") else "cpu"]
