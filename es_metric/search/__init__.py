"""Search: request bodies (queries, pure), running a search (service), neighbourhood
re-ranking (rerank: query expansion, database-side augmentation) and the DBA pass (dba).

May import: core modules, images, index, model (lazily: only an image query embeds).
"""
