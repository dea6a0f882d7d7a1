"""What the ids that travel between services look like: the one place their patterns are spelled."""

from typing import Final

TASK_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A task id (also the Kafka key of every event of the task)."""

LORA_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""A LoRA id: a lower-case slug of at most 64 characters."""

OWNER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
"""An owner id (who an API key, a task or a LoRA belongs to)."""

MODEL_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,31}$"
"""A model pool's name (a request's `model`; also the suffix of its topics and consumer group)."""
