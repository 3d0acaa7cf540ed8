"""HTTP API (FastAPI, OpenAPI at /docs) and the search web page: app (routes), guard
(admission: API key, body limits, search slots), errors (every error as JSON).

May import: anything in es_metric below the CLI (search, index, images, paths, config).
"""
