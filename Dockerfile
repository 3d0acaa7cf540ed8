# The Celery worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY es_metric ./es_metric
COPY mappings ./mappings
RUN pip install --no-cache-dir ".[worker]"
RUN useradd --system --uid 1000 esm
USER esm
WORKDIR /work
CMD ["celery", "-A", "es_metric.ingest.celery_app", "worker", "-Q", "esm", "--loglevel", "INFO"]
