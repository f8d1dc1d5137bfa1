"""Checkpoints in and out: `checkpoint` (the strict folder format: safetensors weights, JSON config, no code run on
load; scheduler_config.json for diffusers), `hub` (checkpoints/ then the Hugging Face Hub: load, available,
from_pretrained, push), `cards` (ModelCard with a model-index), `publish` (every shipped checkpoint to the Hub)."""
