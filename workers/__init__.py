"""Celery deployment entry for a checkout (not installed by the wheel): see celery_app.py."""
