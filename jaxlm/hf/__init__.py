"""Hugging Face checkpoints in and out, one table per architecture: `bert`, `gpt2`, and the
readers they share (`common`)."""
