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
from schemas.keys import ApiKeyRecord, KeyLimits, KeyTable, Role, parse_priorities

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


def _shown(value: float | int | str | None) -> str:
    if value is None:
        return "default"
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(record: ApiKeyRecord) -> str:
    """One line about a key: id, owner, role, limits ('default': the farm's) and state (never the secret)."""
    limits = record.limits
    state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked and record.revoked_at else "active"
    priorities = ",".join(p.value for p in limits.priorities) if limits.priorities else None
    return (
        f"{record.key_id}  owner={record.owner}  role={record.role.value}  "
        f"rps={_shown(limits.requests_per_s)} burst={_shown(limits.burst)} "
        f"max_unfinished={_shown(limits.max_unfinished)} max_cost={_shown(limits.max_cost)} "
        f"priorities={_shown(priorities)}  {state}"
    )


def _settings() -> Settings:
    settings = Settings()
    configure_logging("keys", settings.log_level, settings.log_format)  # logs to stderr: stdout stays clean
    return settings


@keys_app.command()
def create(
    owner: Annotated[str, typer.Option(help="Owner id stamped on this key's jobs (letters, digits, _.@-).")],
    role: Annotated[Role, typer.Option(help="user: own jobs only; admin: everything.")] = Role.USER,
    rps: Annotated[float | None, typer.Option(help="Requests per second [default: DEFAULT_RATE_PER_S].")] = None,
    burst: Annotated[
        int | None, typer.Option(help="Requests allowed at once above the rate [default: DEFAULT_BURST].")
    ] = None,
    max_unfinished: Annotated[
        int | None, typer.Option(help="Jobs pending or running at once [default: DEFAULT_MAX_UNFINISHED].")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="Most duration × takes × steps per request [default: MAX_JOB_COST].")
    ] = None,
    priorities: Annotated[
        str | None,
        typer.Option(help="Allowed priorities, comma list of high,normal,batch [default: DEFAULT_PRIORITIES]."),
    ] = None,
) -> None:
    """Create a key; prints its id and limits, then the secret alone on the last line (shown only once).

    A limit not given follows the farm's default (the gateway's settings) for as long as the key lives."""
    try:
        limits = KeyLimits(
            requests_per_s=rps,
            burst=burst,
            max_unfinished=max_unfinished,
            max_cost=max_cost,
            priorities=None if priorities is None else parse_priorities(priorities),
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
