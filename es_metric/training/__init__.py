"""Training and evaluation: labelled image folders and the evaluation protocols (data),
objectives (losses), the training regimes (train, finetune, partial), the evaluation gate,
retrieval metrics (evaluate), cached backbone features (features) and the HTML report.

May import: core modules, images, model, and search's re-ranking (evaluation ranks as search
ranks). Never the index, ingest or the stack.
"""
