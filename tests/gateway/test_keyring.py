"""API keys on the real broker: every replica's key ring sees creations and revocations within seconds,
keys survive a restart, the topic holds hashes only, and `acefarm keys` prints the secret last."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from acefarm.devtools.keys_cli import publish_key, read_keys, revoke_key
from acefarm.infra.compacted import CompactedReader
from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from gateway.keyring import KeyRing
from schemas import topics
from schemas.keys import ApiKeyRecord, Role

PROPAGATION_S = 5.0
ACEFARM = Path(sys.executable).with_name("acefarm")


@pytest.fixture
async def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings on the test broker, with every acefarm topic created."""
    built = make_settings()
    await ensure_topics(built)
    return built


@pytest.fixture
async def replicas(settings: Settings) -> AsyncIterator[tuple[KeyRing, KeyRing]]:
    """The key rings of two gateway replicas, caught up."""
    rings = (KeyRing(settings), KeyRing(settings))
    for ring in rings:
        await ring.start()
        await ring.reader.wait_caught_up(30)
    yield rings
    for ring in rings:
        await ring.stop()


async def eventually(check: Callable[[], bool], timeout_s: float = PROPAGATION_S) -> None:
    """Wait until `check()` holds; fails the test after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not propagated in time"
        await asyncio.sleep(0.05)


async def test_a_revoked_key_is_refused_on_every_replica_within_seconds(
    settings: Settings, replicas: tuple[KeyRing, KeyRing]
) -> None:
    first, second = replicas
    record, secret = ApiKeyRecord.issue("tenant-a")
    await publish_key(settings, record)
    await eventually(lambda: first.authenticate(secret) is not None and second.authenticate(secret) is not None)
    principal = second.authenticate(secret)
    assert principal is not None and principal.owner == "tenant-a" and principal.key_id == record.key_id

    revoked = await revoke_key(settings, record.key_id)
    assert revoked is not None and revoked.revoked
    started = asyncio.get_running_loop().time()
    await eventually(lambda: second.authenticate(secret) is None and first.authenticate(secret) is None)
    assert asyncio.get_running_loop().time() - started < PROPAGATION_S
    found = second.find(secret)
    assert found is not None and found.revoked
    assert await revoke_key(settings, "000000000000") is None


async def test_keys_survive_a_key_ring_restart(settings: Settings) -> None:
    live, live_secret = ApiKeyRecord.issue("tenant-b", Role.ADMIN)
    dead, dead_secret = ApiKeyRecord.issue("tenant-c")
    for record in (live, dead, dead.revoke()):
        await publish_key(settings, record)
    restarted = KeyRing(settings)
    await restarted.start()
    try:
        await restarted.reader.wait_caught_up(30)
        principal = restarted.authenticate(live_secret)
        assert principal is not None and principal.is_admin
        assert restarted.authenticate(dead_secret) is None
        assert len(restarted) >= 2
    finally:
        await restarted.stop()


async def test_the_topic_holds_hashes_only(settings: Settings) -> None:
    record, secret = ApiKeyRecord.issue("tenant-d")
    await publish_key(settings, record)
    values: list[bytes] = []
    reader = CompactedReader(settings, topics.API_KEYS, lambda _key, value: values.append(value or b""))
    await reader.start()
    try:
        await reader.wait_caught_up(30)
    finally:
        await reader.stop()
    mine = [v for v in values if record.key_id.encode() in v]
    assert mine and all(record.secret_sha256.encode() in v for v in mine)
    assert not [v for v in values if secret.encode() in v or secret.split("_", 2)[2].encode() in v]
    assert (await read_keys(settings)).get(record.key_id) == record


async def test_reading_a_topic_that_does_not_exist_says_so(settings: Settings) -> None:
    reader = CompactedReader(settings, "acefarm.test.no-such-topic", lambda _key, _value: None)
    with pytest.raises(RuntimeError, match="does not exist"):
        await reader.start()


def run_cli(kafka_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `acefarm` console script against the test broker."""
    env = os.environ | kafka_env | {"LOG_FORMAT": "json"}
    return subprocess.run([str(ACEFARM), *args], env=env, capture_output=True, text=True, timeout=120)


async def test_cli_prints_the_secret_last_and_never_lists_it(
    kafka_env: dict[str, str], replicas: tuple[KeyRing, KeyRing]
) -> None:
    ring = replicas[0]
    created = await asyncio.to_thread(
        run_cli, kafka_env, "keys", "create", "--owner", "ops", "--role", "admin", "--rps", "2", "--priorities", "high"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    await eventually(lambda: ring.authenticate(secret) is not None)
    principal = ring.authenticate(secret)
    assert principal is not None and principal.is_admin and principal.limits.requests_per_s == 2
    key_id = principal.key_id
    assert key_id is not None

    listed = await asyncio.to_thread(run_cli, kafka_env, "keys", "list")
    assert listed.returncode == 0 and key_id in listed.stdout and secret not in listed.stdout + listed.stderr
    revoked = await asyncio.to_thread(run_cli, kafka_env, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    await eventually(lambda: ring.authenticate(secret) is None)

    unknown = await asyncio.to_thread(run_cli, kafka_env, "keys", "revoke", "000000000000")
    assert unknown.returncode == 1 and "No key 000000000000" in unknown.stderr
    bad = await asyncio.to_thread(run_cli, kafka_env, "keys", "create", "--owner", "no spaces")
    assert bad.returncode == 2 and "should match pattern" in bad.stderr
