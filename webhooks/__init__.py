"""The webhook service: follows the task status stream and calls each job's webhook, signed, with durable retries."""
