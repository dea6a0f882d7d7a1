"""Retention of stored files: S3 lifecycle rules on moto's S3 server, the local sweeper on real files, and the
`acefarm storage` commands that apply them."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acefarm.devtools.cli import app
from acefarm.infra.retention import (
    DAY_S,
    RetentionRule,
    delete_task_files,
    lifecycle_rules,
    retention_rules,
    setup_lifecycle,
    sweep,
)
from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage, S3Storage

EXPIRING = ("outputs/", "inputs/", "datasets/", "checkpoints/", "attempts/")


def test_every_expiring_prefix_gets_its_lifetime_and_zero_keeps_forever() -> None:
    rules = retention_rules(Settings(output_retention_days=30, input_retention_days=7, dataset_retention_days=0))
    assert {r.prefix: r.days for r in rules} == {"outputs/": 30, "inputs/": 7, "checkpoints/": 30, "attempts/": 30}
    defaults = retention_rules(Settings())
    assert tuple(r.prefix for r in defaults) == EXPIRING
    assert "loras/" not in {r.prefix for r in defaults}  # adapters are deleted by their owners only


def test_lifecycle_rules_round_fractions_of_a_day_up() -> None:
    [rule] = lifecycle_rules([RetentionRule("outputs/", 0.5)])
    assert rule["Expiration"] == {"Days": 1} and rule["Filter"] == {"Prefix": "outputs/"}
    assert rule["Status"] == "Enabled" and rule["ID"] == "acefarm-expire-outputs"


async def test_setup_lifecycle_installs_one_rule_per_prefix_and_keeps_foreign_rules(s3_endpoint: str) -> None:
    storage = await S3Storage(f"r-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint).start()
    try:
        foreign = {"ID": "ops-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 3}}
        await storage.put_lifecycle([foreign])
        installed = await setup_lifecycle(storage, retention_rules(Settings(output_retention_days=10)))
        by_id = {rule["ID"]: rule for rule in installed}
        assert set(by_id) == {"ops-logs", *(f"acefarm-expire-{p.strip('/')}" for p in EXPIRING)}
        assert by_id["acefarm-expire-outputs"]["Expiration"]["Days"] == 10
        assert by_id["acefarm-expire-inputs"]["Filter"]["Prefix"] == "inputs/"

        again = await setup_lifecycle(storage, retention_rules(Settings(output_retention_days=0)))  # re-run: replaced
        assert {rule["ID"] for rule in again} == set(by_id) - {"acefarm-expire-outputs"}
    finally:
        await storage.close()


async def test_sweep_deletes_only_files_past_their_prefix_lifetime(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    keys = {
        "outputs/old/take-0.wav": 31,
        "outputs/new/take-0.wav": 29,
        "inputs/uploads/abc/u1.wav": 8,
        "inputs/t1/source.wav": 6,
        "datasets/t2.zip": 100,
        "loras/l1/manifest.json": 1000,
    }
    now = time.time()
    for key, age_days in keys.items():
        await storage.put_bytes(key, b"x", "application/octet-stream")
        os.utime(storage.local_path(key), (now - age_days * DAY_S,) * 2)  # type: ignore[arg-type]

    swept = await sweep(storage, retention_rules(Settings(dataset_retention_days=0)), now=now)

    assert swept == {"outputs/": 1, "inputs/": 1, "checkpoints/": 0, "attempts/": 0}
    left = {info.key for info in await storage.list("")}
    assert left == {"outputs/new/take-0.wav", "inputs/t1/source.wav", "datasets/t2.zip", "loras/l1/manifest.json"}
    assert not (tmp_path / "outputs" / "old").exists() and not (tmp_path / "inputs" / "uploads").exists()


async def test_delete_task_files_removes_every_file_of_that_task_only(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for key in ("outputs/t1/take-0.wav", "inputs/t1/source.wav", "datasets/t1.zip", "checkpoints/t1/state.pt"):
        await storage.put_bytes(key, b"x", "application/octet-stream")
    await storage.put_bytes("outputs/t10/take-0.wav", b"y", "audio/wav")
    assert await delete_task_files(storage, "t1") == 4
    assert [info.key for info in await storage.list("")] == ["outputs/t10/take-0.wav"]


def test_storage_commands(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`acefarm storage setup-lifecycle` on S3 and `acefarm storage sweep` on local storage, from the environment."""
    from acefarm.infra.settings import get_settings

    bucket = f"c-{uuid.uuid4().hex[:12]}"
    for name, value in {"STORAGE_BACKEND": "s3", "S3_ENDPOINT_URL": s3_endpoint, "STORAGE_BUCKET": bucket}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OUTPUT_RETENTION_DAYS", "14")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["storage", "setup-lifecycle"])
        assert result.exit_code == 0, result.output
        rules = {rule["ID"]: rule for rule in json.loads(result.output)}
        assert rules["acefarm-expire-outputs"]["Expiration"]["Days"] == 14

        wrong = CliRunner().invoke(app, ["storage", "sweep"])
        assert wrong.exit_code != 0 and "STORAGE_BACKEND=local" in wrong.output

        monkeypatch.setenv("STORAGE_BACKEND", "local")
        monkeypatch.setenv("OUTPUT_DIR", str(tmp_path))
        get_settings.cache_clear()
        stale = tmp_path / "outputs" / "t" / "take-0.wav"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"x")
        os.utime(stale, (time.time() - 15 * DAY_S,) * 2)
        result = CliRunner().invoke(app, ["storage", "sweep"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["outputs/"] == 1 and not stale.exists()
    finally:
        get_settings.cache_clear()
