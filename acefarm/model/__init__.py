"""ACE-Step model and domain code shared by workers: pipeline loading, LoRA adapters, datasets, tiny checkpoints."""
