"""gpu_consumer."""
