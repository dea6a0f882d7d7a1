"""The pure parts: signatures, target checks, which snapshot is which delivery, backoff."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from acefarm.infra.webhook_targets import TargetRefused, check_addresses, refused_address
from schemas.status import Stage, StoredFile, TaskState, TaskStatus, WebhookPayload
from schemas.webhooks import (
    SIGNATURE_HEADER,
    InvalidSignature,
    WebhookStatus,
    WebhookTarget,
    signature_header,
    verify_signature,
)
from webhooks.deliveries import backoff_s, delivery_for

SECRET = "s" * 32
BODY = b'{"event": "completed"}'
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_signed_body_verifies_and_anything_else_does_not() -> None:
    header = signature_header(SECRET, BODY)
    verify_signature(SECRET, {SIGNATURE_HEADER.lower(): header}, BODY)
    cases = [
        ({SIGNATURE_HEADER: header}, BODY + b" ", "does not match"),
        ({SIGNATURE_HEADER: signature_header("x" * 32, BODY)}, BODY, "does not match"),
        ({SIGNATURE_HEADER: signature_header(SECRET, BODY, int(time.time()) - 400)}, BODY, "outside the tolerance"),
        ({SIGNATURE_HEADER: "v1=abc"}, BODY, "malformed"),
        ({}, BODY, "no X-Acefarm-Signature"),
    ]
    for headers, body, why in cases:
        with pytest.raises(InvalidSignature, match=why):
            verify_signature(SECRET, headers, body)


def test_any_v1_may_match_so_secrets_can_rotate() -> None:
    at = int(time.time())
    old = signature_header("o" * 32, BODY, at).split(",")[1]
    verify_signature(SECRET, {SIGNATURE_HEADER: f"{signature_header(SECRET, BODY, at)},{old}"}, BODY)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.0.0.8", "a private address"),
        ("192.168.1.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("100.64.0.1", "not a public address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("::1", "a loopback address"),
        ("fe80::1%eth0", "a link-local address"),
        ("fd00::1", "a private address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_only_public_addresses_pass(address: str, kind: str | None) -> None:
    assert refused_address(address) == kind


def test_every_address_of_a_name_is_checked_unless_private_ones_are_allowed() -> None:
    with pytest.raises(TargetRefused, match=re.escape("hooks.example resolves to 10.0.0.1, a private address")):
        check_addresses("hooks.example", ["8.8.8.8", "10.0.0.1"], allow_private=False)
    check_addresses("hooks.example", ["8.8.8.8", "10.0.0.1"], allow_private=True)
    with pytest.raises(TargetRefused, match="no address"):
        check_addresses("hooks.example", [], allow_private=True)


def snapshot(state: TaskState, version: int, events: list[str] | None = None, **fields: object) -> TaskStatus:
    target = None if events is None else WebhookTarget(url="https://hooks.example/x", events=events)
    return TaskStatus(
        task_id="t1", status=state, created_at=NOW, updated_at=NOW, version=version, webhook=target, **fields
    )


ALL = ["start", "progress", "completed"]


def test_each_snapshot_is_at_most_one_event_and_the_filter_is_respected() -> None:
    def event(status: TaskStatus) -> str | None:
        found = delivery_for(status, base_url="https://farm.example", now=NOW, max_age_s=60)
        return found.event if found else None

    assert event(snapshot(TaskState.PENDING, 1, ALL)) is None
    assert event(snapshot(TaskState.RUNNING, 2, ALL, attempt="a")) == "start"
    assert event(snapshot(TaskState.RUNNING, 3, ALL, attempt="a", stage=Stage.DIFFUSION)) == "progress"
    assert event(snapshot(TaskState.FAILED, 4, ALL)) == "completed"
    assert event(snapshot(TaskState.RUNNING, 3, ["completed"], attempt="a", stage=Stage.DIFFUSION)) is None
    assert event(snapshot(TaskState.RUNNING, 2, ["progress", "completed"], attempt="a")) is None
    assert event(snapshot(TaskState.SUCCESS, 4)) is None  # no webhook


def test_ids_are_stable_and_snapshots_the_service_caused_or_handled_are_skipped() -> None:
    done = snapshot(
        TaskState.SUCCESS, 4, ["completed"], files=[StoredFile(key="a b.wav", content_type="x", size_bytes=1)]
    )
    first = delivery_for(done, base_url="https://farm.example/", now=NOW, max_age_s=60)
    assert first is not None
    again = delivery_for(done.model_copy(update={"version": 9}), base_url="", now=NOW, max_age_s=60)
    assert again is not None and again.delivery_id == first.delivery_id
    payload = WebhookPayload.model_validate_json(first.body)
    assert payload.status.file_urls == ["https://farm.example/files/a%20b.wav"]
    assert (payload.delivery_id, payload.event, payload.task_id) == (first.delivery_id, "completed", "t1")

    recorded = WebhookStatus(delivery_id="other", event="start", state="retrying", attempts=1, updated_at=NOW)
    caused = done.model_copy(update={"version": 5, "webhook_status": recorded.model_copy(update={"status_version": 5})})
    assert delivery_for(caused, base_url="", now=NOW, max_age_s=60) is None
    handled = recorded.model_copy(update={"delivery_id": first.delivery_id, "state": "delivered", "status_version": 5})
    assert (
        delivery_for(
            done.model_copy(update={"version": 6, "webhook_status": handled}), base_url="", now=NOW, max_age_s=60
        )
        is None
    )
    assert delivery_for(done, base_url="", now=NOW + timedelta(seconds=61), max_age_s=60) is None


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    assert [backoff_s(n, 5, 60, 0.999999) for n in (1, 2, 3, 4, 5)] == pytest.approx([5, 10, 20, 40, 60], rel=1e-5)
    assert backoff_s(3, 5, 60, 0.0) == 10
    assert backoff_s(10_000, 5, 3600, 0.5) == 2700
