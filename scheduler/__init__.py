"""The fair scheduler: admits generation jobs from the intake topic into the ready topic, round-robin across
owners with priority weights, only as fast as the GPU consumers drain it (docs/scheduling.md)."""
