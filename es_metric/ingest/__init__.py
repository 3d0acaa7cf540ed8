"""Ingest: images from a source to vectors in an index, through Celery workers.

Client side (no torch): sources (folder, manifest), enqueue (tasks + waiting), jobs (job state
in Redis), stall (is a job alive?), broker (the one reader of kombu's private Redis layout,
version-checked), celery_app (the app, the task name, who answers).
Worker side: tasks (thin task shells), pipeline (decode -> embed -> bulk write), outcomes
(transient or permanent, retries, failing a batch). reindex moves an index to a new model
(migrate: in place); service is what the CLI and the Python API share (ingest and wait with
the DBA pass, change the model).

May import: core modules, images, paths, index, model (worker side only), search (reindex
for the fields a DBA pass derives; service for the DBA pass after an ingest).
"""
