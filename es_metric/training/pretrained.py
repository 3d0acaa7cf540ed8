"""A pretrained model as a first-class model (``esm train DATA --head none``): the backbone's own
features, nothing trained. A shop indexes with it at once and switches by ``esm reindex`` once a
trained model passes its gate. Its card measures it on the catalogue's validation queries (it
is its own baseline), and the re-ranking that helps those features."""
from __future__ import annotations

from ..model.encoder import Encoder
from .catalogue import Catalogue
from .config import TrainConfig
from .frozen import CachedFeatures
from .validate import Validator
from .verdict import validation_metrics

__all__ = ["pretrained_metrics"]


def pretrained_metrics(encoder: Encoder, cfg: TrainConfig, cat: Catalogue,
                       validator: Validator) -> tuple[dict, dict]:
    """(metrics, re-ranking) of the pretrained backbone's normalised features."""
    import torch

    cached = CachedFeatures(cfg, cat, encoder, views=False)

    def embed(samples):
        return torch.nn.functional.normalize(cached.of(samples), dim=-1).numpy()

    metrics, rerank = validation_metrics(validator, embed, embed, encoder, f"pretrained-cosine {cfg.backbone}", cfg)
    metrics["gate"] = {"passed": None, "pretrained": True, "protocol": validator.gate_protocol,
                       "against": "itself",
                       "verdict": "the pretrained model itself: nothing trained, nothing to gate; index with "
                                  "it now and `esm reindex` to a trained model once one passes its gate"}
    metrics["measured_head"] = "shipped"
    return metrics, rerank
