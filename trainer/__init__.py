"""The LoRA trainer: consumes training requests and trains ACE-Step 1.5 adapters with PEFT."""
