"""Read Prometheus metrics the way Prometheus does: over HTTP, parsed by prometheus_client's parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample at `url` (a /metrics endpoint): (name, labels) → value."""
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`; 0.0 when it is absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
