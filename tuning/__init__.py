"""Tuning: LoRA/QLoRA training, constrained generation, model comparison and the end-to-end experiment."""

