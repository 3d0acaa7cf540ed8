"""The index: the Elasticsearch client and its errors (client), request bodies for mappings
(mappings, pure), index lifecycle on a live cluster (indices), the index record
``_meta.es_metric`` and its one guarded writer (record), where the vectors are (layout, pure),
user fields of a document (docfields, pure) and the dead-letter records (failures).

May import: the core modules (config, errors, redact, types, similarity). Nothing here loads
a model or talks to Redis or Celery.
"""
