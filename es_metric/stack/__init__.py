"""The local development stack: a single-node Elasticsearch (es_node), Redis and a Celery
worker, started, stopped by pid (procs) and reported on (lifecycle).

May import: core modules, index (the client, for an external cluster's health), ingest's
Celery app (to ping workers). Nothing imports the stack except the CLI and tests.
"""
