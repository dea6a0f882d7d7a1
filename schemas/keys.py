"""API keys: the record kept on the compacted `acefarm.api.keys` topic, and the secret format.

A secret reads `af_<key id>_<43 urlsafe characters>` (32 random bytes). The topic holds only the
SHA-256 of the secret, keyed by key id, so checking a key is one dictionary lookup and one
constant-time compare. An unsalted fast hash is enough here: the secret carries 256 random bits, so
there is nothing to guess from the hash (salts and slow hashes protect low-entropy passwords).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.events import utcnow
from schemas.ids import OWNER_PATTERN
from schemas.tenancy import Priority

SECRET_PREFIX = "af"
KEY_ID_PATTERN = r"^[a-z0-9]{12}$"

MAX_COST = 600.0 * 8 * 200
"""The largest possible cost of one request: 600 s × 8 takes × 200 steps."""


class Role(StrEnum):
    """What a key may do: `user` sees its owner's tasks, `admin` sees everything."""

    USER = "user"
    ADMIN = "admin"


class KeyLimits(BaseModel):
    """Per-key limits the gateway enforces on every request; a field left unset (None) takes the farm's
    default from the gateway's settings (`DEFAULT_RATE_PER_S`, `DEFAULT_BURST`, `DEFAULT_MAX_UNFINISHED`,
    `MAX_JOB_COST`, `DEFAULT_PRIORITIES`), so changing a default reaches every such key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_s: Annotated[
        float | None, Field(gt=0, description="Sustained requests per second (token bucket rate).")
    ] = None
    burst: Annotated[int | None, Field(ge=1, description="Requests allowed at once above the rate (bucket size).")] = (
        None
    )
    max_unfinished: Annotated[int | None, Field(ge=1, description="Jobs pending or running at once.")] = None
    max_cost: Annotated[
        float | None, Field(gt=0, le=MAX_COST, description="Ceiling of one request's duration_s × takes × steps.")
    ] = None
    priorities: Annotated[
        tuple[Priority, ...] | None, Field(min_length=1, description="Priorities this key's requests may ask for.")
    ] = None


def parse_priorities(value: str) -> tuple[Priority, ...]:
    """A comma list such as 'normal,batch' as priorities; ValueError naming the allowed ones otherwise."""
    try:
        found = tuple(Priority(name.strip()) for name in value.split(",") if name.strip())
    except ValueError:
        found = ()
    if not found:
        raise ValueError(f"use a comma list of {', '.join(p.value for p in Priority)}, e.g. 'normal,batch'")
    return found


class ApiKeyRecord(BaseModel):
    """One API key as stored on `acefarm.api.keys` (Kafka key: the key id). Never holds the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["api_key"] = "api_key"
    schema_version: Literal[1] = 1
    key_id: Annotated[str, Field(pattern=KEY_ID_PATTERN, description="Also the Kafka message key.")]
    secret_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the whole secret.")]
    owner: Annotated[str, Field(pattern=OWNER_PATTERN, description="Owner id stamped on the key's requests.")]
    role: Role = Role.USER
    limits: KeyLimits = Field(default_factory=KeyLimits)
    created_at: datetime = Field(default_factory=utcnow)
    revoked: bool = False
    revoked_at: datetime | None = None

    @classmethod
    def issue(cls, owner: str, role: Role = Role.USER, limits: KeyLimits | None = None) -> tuple[ApiKeyRecord, str]:
        """A new key record and its secret; the secret exists only in the return value."""
        key_id = secrets.token_hex(6)
        secret = f"{SECRET_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = cls(
            key_id=key_id, secret_sha256=hash_secret(secret), owner=owner, role=role, limits=limits or KeyLimits()
        )
        return record, secret

    def matches(self, secret: str) -> bool:
        """Whether `secret` is this key's secret (constant-time compare of the hashes)."""
        return hmac.compare_digest(hash_secret(secret), self.secret_sha256)

    def revoke(self) -> ApiKeyRecord:
        """This record marked revoked now (unchanged if it already is)."""
        if self.revoked:
            return self
        return self.model_copy(update={"revoked": True, "revoked_at": utcnow()})

    def to_bytes(self) -> bytes:
        """JSON encoding used on the wire."""
        return self.model_dump_json().encode()


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a secret, as stored in `ApiKeyRecord.secret_sha256`."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str | None:
    """The key id inside a secret of the form `af_<key id>_<random>`, or None when it has another form."""
    prefix, _, rest = secret.partition("_")
    key_id, _, random_part = rest.partition("_")
    if prefix != SECRET_PREFIX or len(key_id) != 12 or not random_part:
        return None
    return key_id


class KeyTable:
    """key id → latest key record, folded from the topic's records (no I/O).

    Revocation is final: a later record that would bring a revoked key back is ignored. A tombstone
    (no value) forgets the key; a malformed record is counted in `malformed` and skipped.
    """

    def __init__(self) -> None:
        self._records: dict[str, ApiKeyRecord] = {}
        self.malformed = 0

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key_id: str) -> ApiKeyRecord | None:
        """The record of `key_id`, revoked or not."""
        return self._records.get(key_id)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record of the topic (`value` None: a tombstone for `key`)."""
        if value is None:
            if key is not None:
                self._records.pop(key.decode(errors="replace"), None)
            return
        try:
            record = ApiKeyRecord.model_validate_json(value)
        except ValidationError:
            self.malformed += 1
            return
        known = self._records.get(record.key_id)
        if known is not None and known.revoked and not record.revoked:
            return
        self._records[record.key_id] = record

    def records(self) -> list[ApiKeyRecord]:
        """Every record (revoked ones too), oldest first."""
        return sorted(self._records.values(), key=lambda r: r.created_at)
