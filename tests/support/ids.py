"""Ids for test jobs."""

from __future__ import annotations

import uuid


def new_task_id(prefix: str = "t") -> str:
    """A unique task id for a test (`<prefix>-` and 12 hex digits)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
