"""Celery workers: the app (celery_app.py) and thin task shells (tasks.py)."""
