"""es-metric: learned visual similarity for an existing Elasticsearch stack."""

from .version import ES_VERSION, __version__

__all__ = ["ES_VERSION", "__version__"]
