"""The index: the Elasticsearch client and its errors (client), request bodies for mappings
(mappings, pure), index lifecycle on a live cluster (indices), user fields of a document
(docfields, pure) and the dead-letter records (failures).

May import: the core modules (config, errors, redact, types, similarity). Nothing here loads
a model or talks to Redis or Celery.
"""
