"""Supervised fine-tuning (full and LoRA) with per-epoch fitting dynamics."""
