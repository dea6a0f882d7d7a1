"""The planning stage: ACE-Step 1.5's 5 Hz LM as a Kafka service (docs/planner.md)."""
