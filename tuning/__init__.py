"""Tuning: the unified scorer every model is judged by, and (later) LoRA training, generation and evaluation."""
