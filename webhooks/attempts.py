"""Make one attempt of a delivery and record what became of it.

A 2xx answer delivers it. Otherwise, unless it is a `progress` delivery (best effort, superseded by the
next one), the next attempt is scheduled on `WEBHOOK_RETRIES` with a due time (exponential backoff with
jitter) while it still falls within `WEBHOOK_RETRY_FOR_S` of the first attempt; after that the delivery has
failed. Failures, give-ups, and successes of `completed` deliveries or of retries are reported on
`TASK_EVENTS` (`WebhookDelivery`) so the status fold shows them on the task. `attempt` returns only once
whatever it publishes is acknowledged: callers commit the offset that asked for the attempt afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_GAVE_UP, WEBHOOK_RETRIES
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import WebhookDelivery, WebhookRetry, utcnow
from schemas.webhooks import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookState,
    signature_header,
)
from webhooks.deliveries import Delivery, backoff_s
from webhooks.sender import Outcome, Sender

log = get_logger(__name__)

USER_AGENT = "acefarm-webhooks/1"


class Attempts:
    """Makes attempts of deliveries through `sender`, publishing retries and reports with `producer`."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        sender: Sender,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if settings.webhook_secret is None:
            raise ValueError("WEBHOOK_SECRET is not set: webhook deliveries must be signed")
        self._secret = settings.webhook_secret.get_secret_value().encode()
        self._settings = settings
        self._producer = producer
        self._sender = sender
        self._jitter = jitter

    def headers(self, delivery: Delivery) -> dict[str, str]:
        """The headers of one attempt: JSON, the signature (fresh timestamp), the delivery id, event and attempt."""
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_header(self._secret, delivery.body),
            DELIVERY_HEADER: delivery.delivery_id,
            EVENT_HEADER: delivery.event,
            ATTEMPT_HEADER: str(delivery.attempt),
        }

    async def attempt(self, delivery: Delivery) -> Outcome:
        """POST the delivery once, then schedule its retry or report it as the rules above say."""
        outcome = await self._sender.post(delivery.url, delivery.body, self.headers(delivery))
        fields = {"task_id": delivery.task_id, "delivery_id": delivery.delivery_id, "attempt": delivery.attempt}
        WEBHOOK_ATTEMPTS.labels(delivery.event, "delivered" if outcome.ok else "failed").inc()
        if outcome.ok:
            log.info("webhooks.delivered", webhook_event=delivery.event, status_code=outcome.status_code, **fields)
            if delivery.event == "completed" or delivery.attempt > 1:
                await self._report(delivery, "delivered", None)
            return outcome
        log.warning("webhooks.attempt_failed", webhook_event=delivery.event, error=outcome.error, **fields)
        if delivery.event == "progress":
            return outcome
        now = utcnow()
        due = now + timedelta(seconds=self._delay(delivery.attempt))
        if due - delivery.first_attempt_at <= timedelta(seconds=self._settings.webhook_retry_for_s):
            await publish(self._producer, topics.WEBHOOK_RETRIES, self._retry(delivery, due))
            WEBHOOK_RETRIES.inc()
            log.info("webhooks.retry_scheduled", due_at=due.isoformat(), **fields)
            await self._report(delivery, "retrying", outcome.error)
        else:
            WEBHOOK_GAVE_UP.inc()
            log.error("webhooks.gave_up", webhook_event=delivery.event, error=outcome.error, **fields)
            await self._report(delivery, "failed", outcome.error)
        return outcome

    def _delay(self, attempt: int) -> float:
        settings = self._settings
        return backoff_s(attempt, settings.webhook_backoff_s, settings.webhook_backoff_max_s, self._jitter())

    @staticmethod
    def _retry(delivery: Delivery, due: datetime) -> WebhookRetry:
        return WebhookRetry(
            task_id=delivery.task_id,
            delivery_id=delivery.delivery_id,
            event=delivery.event,
            url=delivery.url,
            body=delivery.body.decode(),
            attempt=delivery.attempt + 1,
            first_attempt_at=delivery.first_attempt_at,
            due_at=due,
        )

    async def _report(self, delivery: Delivery, state: WebhookState, error: str | None) -> None:
        report = WebhookDelivery(
            task_id=delivery.task_id,
            delivery_id=delivery.delivery_id,
            event=delivery.event,
            state=state,
            attempts=delivery.attempt,
            last_error=error[:1000] if error else None,
        )
        await publish(self._producer, topics.TASK_EVENTS, report)
