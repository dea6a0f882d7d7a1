"""`acefarm keys create|list|revoke`: manage API keys on the compacted `acefarm.api.keys` topic.

Records go out with `acks=all` and are awaited, so a command that returned has stored its change;
every gateway follows the topic and applies it within a second. Secrets are printed once by `create`
(alone on the last line, for scripts) and never stored: the topic keeps only their SHA-256.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from acefarm.infra.compacted import CompactedReader
from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import configure_logging
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.keys import ApiKeyRecord, KeyLimits, KeyTable, Role
from schemas.tenancy import Priority

keys_app = typer.Typer(help="Create, list or revoke API keys.", no_args_is_help=True)

READ_TIMEOUT_S = 30.0


async def publish_key(settings: Settings, record: ApiKeyRecord) -> None:
    """Write one key record to the key topic (keyed by key id) and wait for the broker's acknowledgement."""
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topics.API_KEYS, record.to_bytes(), key=record.key_id.encode())
    finally:
        await producer.stop()


async def read_keys(settings: Settings) -> KeyTable:
    """Every key record currently on the topic, folded into a table."""
    await ensure_topics(settings)
    table = KeyTable()
    reader = CompactedReader(settings, topics.API_KEYS, table.apply, name="keys-cli")
    await reader.start()
    try:
        await reader.wait_caught_up(READ_TIMEOUT_S)
    finally:
        await reader.stop()
    return table


async def revoke_key(settings: Settings, key_id: str) -> ApiKeyRecord | None:
    """Store `key_id` as revoked; returns the revoked record, or None when no such key exists."""
    record = (await read_keys(settings)).get(key_id)
    if record is None:
        return None
    revoked = record.revoke()
    if revoked is not record:
        await publish_key(settings, revoked)
    return revoked


def describe(record: ApiKeyRecord) -> str:
    """One line about a key: id, owner, role, limits and state (never the secret)."""
    limits = record.limits
    state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked and record.revoked_at else "active"
    return (
        f"{record.key_id}  owner={record.owner}  role={record.role.value}  "
        f"rps={limits.requests_per_s:g} burst={limits.burst} max_unfinished={limits.max_unfinished} "
        f"max_cost={limits.max_cost:g} priorities={','.join(p.value for p in limits.priorities)}  {state}"
    )


def _settings() -> Settings:
    settings = Settings()
    configure_logging("keys", settings.log_level, settings.log_format)  # logs to stderr: stdout stays clean
    return settings


def _priorities(value: str) -> tuple[Priority, ...]:
    try:
        return tuple(Priority(name.strip()) for name in value.split(",") if name.strip())
    except ValueError:
        raise typer.BadParameter(f"use a comma list of {', '.join(p.value for p in Priority)}") from None


@keys_app.command()
def create(
    owner: Annotated[str, typer.Option(help="Owner id stamped on this key's jobs (letters, digits, _.@-).")],
    role: Annotated[Role, typer.Option(help="user: own jobs only; admin: everything.")] = Role.USER,
    rps: Annotated[float, typer.Option(help="Requests per second.")] = KeyLimits().requests_per_s,
    burst: Annotated[int, typer.Option(help="Requests allowed at once above the rate.")] = KeyLimits().burst,
    max_unfinished: Annotated[int, typer.Option(help="Jobs pending or running at once.")] = KeyLimits().max_unfinished,
    max_cost: Annotated[float, typer.Option(help="Most duration × takes × steps per request.")] = KeyLimits().max_cost,
    priorities: Annotated[str, typer.Option(help="Allowed priorities, comma list of high,normal,batch.")] = ",".join(
        p.value for p in KeyLimits().priorities
    ),
) -> None:
    """Create a key; prints its id and limits, then the secret alone on the last line (shown only once)."""
    try:
        limits = KeyLimits(
            requests_per_s=rps,
            burst=burst,
            max_unfinished=max_unfinished,
            max_cost=max_cost,
            priorities=_priorities(priorities),
        )
        record, secret = ApiKeyRecord.issue(owner, role, limits)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    asyncio.run(publish_key(_settings(), record))
    typer.echo(describe(record))
    typer.echo("The secret below is shown only this once; send it as 'Authorization: Bearer <secret>'.")
    typer.echo(secret)


@keys_app.command("list")
def list_command() -> None:
    """List every key: id, owner, role, limits and whether it is revoked (never secrets)."""
    table = asyncio.run(read_keys(_settings()))
    for record in table.records():
        typer.echo(describe(record))
    if not len(table):
        typer.echo("No keys yet: acefarm keys create --owner NAME", err=True)


@keys_app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (see `acefarm keys list`).")]) -> None:
    """Revoke a key on every gateway (within about a second); revocation is final."""
    record = asyncio.run(revoke_key(_settings(), key_id))
    if record is None:
        typer.echo(f"No key {key_id}; see `acefarm keys list`.", err=True)
        raise typer.Exit(1)
    typer.echo(describe(record))
