"""The package version and the Elasticsearch server version it is pinned to."""

__all__ = ["ES_VERSION", "__version__"]

__version__ = "0.1.0"

#: The Elasticsearch server version the local stack and docker-compose run. Pinned here only;
#: the Python client in pyproject.toml is pinned to the same major (a test checks they agree).
ES_VERSION = "8.19.21"
