"""The model: backbones and encoders (torch), the embedding path, and model files (weights +
model card).

May import: core modules and images. Never the index, ingest, search or training.
"""
