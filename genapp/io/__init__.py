"""Checkpoints in and out: `checkpoint` (the strict folder format: safetensors weights, JSON config, no code run on
load), `hub` (checkpoints/ then the Hugging Face Hub: load, available, push), `cards` (model cards)."""
