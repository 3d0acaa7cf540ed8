"""HTTP API (FastAPI, OpenAPI at /docs) and the search web page."""
