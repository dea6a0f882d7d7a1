"""API key records: secrets are issued once and stored only as hashes; the table folds records, revocation is final."""

import pytest
from pydantic import ValidationError

from schemas.keys import ApiKeyRecord, KeyLimits, KeyTable, Role, hash_secret, key_id_of
from schemas.tenancy import Priority


def test_issue_returns_a_secret_the_record_matches_but_does_not_hold() -> None:
    record, secret = ApiKeyRecord.issue("alice", Role.ADMIN)
    assert secret.startswith(f"af_{record.key_id}_")
    assert len(secret) == len("af_") + 12 + 1 + 43
    assert record.matches(secret)
    assert not record.matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert record.secret_sha256 == hash_secret(secret)
    assert secret not in record.to_bytes().decode()
    assert record.role is Role.ADMIN and record.owner == "alice"


def test_key_id_is_read_from_the_secret() -> None:
    record, secret = ApiKeyRecord.issue("bob")
    assert key_id_of(secret) == record.key_id
    for other in ("", "af_", "af_short_x", "xx_0123456789ab_rest", f"af_{record.key_id}_", "Bearer abc"):
        assert key_id_of(other) is None


def test_record_rejects_bad_owner_and_limits() -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        ApiKeyRecord.issue("bad owner!")
    with pytest.raises(ValidationError, match="at least 1 item"):
        KeyLimits(priorities=())
    with pytest.raises(ValidationError, match="greater than 0"):
        KeyLimits(requests_per_s=0)
    assert KeyLimits(priorities=("high",)).priorities == (Priority.HIGH,)


def test_table_folds_records_and_revocation_is_final() -> None:
    table = KeyTable()
    record, _ = ApiKeyRecord.issue("carol")
    key = record.key_id.encode()
    table.apply(key, record.to_bytes())
    assert table.get(record.key_id) == record
    revoked = record.revoke()
    assert revoked.revoked and revoked.revoked_at is not None and revoked.revoke() is revoked
    table.apply(key, revoked.to_bytes())
    table.apply(key, record.to_bytes())  # a stale copy of the live record must not bring it back
    assert table.get(record.key_id) == revoked
    table.apply(key, b"{not json")
    assert table.malformed == 1 and len(table) == 1
    table.apply(key, None)  # tombstone
    assert table.get(record.key_id) is None and table.records() == []
