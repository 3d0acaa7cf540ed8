"""Deployment entry from a checkout: ``celery -A workers.celery_app worker -Q esm``.

The app lives in the package (``es_metric.ingest.celery_app``, which works wherever es-metric
is installed); this module is not part of the wheel."""
from es_metric.ingest.celery_app import app

__all__ = ["app"]
