"""The long-job runtime: runs a worker's job from its Kafka record to the committed offset."""
