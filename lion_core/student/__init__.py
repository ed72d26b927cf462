"""The student: fine-tuning as a launched subprocess (HF Trainer, DeepSpeed ZeRO), checkpoints, inference."""
