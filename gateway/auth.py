"""Who is calling: API keys from `Authorization: Bearer <key>` or `X-API-Key`, or nobody in particular.

`AUTH_MODE=keys` resolves the key against the `KeyRing`; `AUTH_MODE=off` makes every caller the
admin-like `anonymous` principal. `resolve_principal` is plain Python; `principal_dependency` wraps it
for Litestar handlers (a handler that takes `principal: NamedDependency[Principal]` is authenticated),
and `principal_guard` answers 401 before a request's body is even read, keeping the principal for the
dependency. A handler marked `opt={SIGNED_LINKS: True}` is let through: it accepts a signed link instead
of a key and authenticates the rest itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from schemas import tenancy
from schemas.keys import MAX_COST, ApiKeyRecord, KeyLimits, Role
from schemas.tenancy import Priority

if TYPE_CHECKING:
    from gateway.keyring import KeyRing

AuthMode = Literal["keys", "off"]

PRINCIPAL_STATE = "principal"
"""Where `principal_guard` keeps the request's principal (`request.state`)."""

SIGNED_LINKS = "signed_links"
"""Handler `opt` flag: the handler also accepts signed links and checks keys itself."""

HOW_TO_SEND = "send your API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"

UNLIMITED = KeyLimits(
    requests_per_s=1e9, burst=10**9, max_unfinished=10**9, max_cost=MAX_COST, priorities=tuple(Priority)
)
"""The limits of the anonymous principal when auth is off: none in effect (a single-user farm); only the
farm-wide queue limit (`MAX_QUEUED_JOBS`) still applies."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: the owner stamped on its work, its role and its key's limits."""

    owner: str
    role: Role
    key_id: str | None
    limits: KeyLimits

    @classmethod
    def of_record(cls, record: ApiKeyRecord) -> Principal:
        """The principal a key record stands for."""
        return cls(owner=record.owner, role=record.role, key_id=record.key_id, limits=record.limits)

    @property
    def is_admin(self) -> bool:
        """Whether this caller may see and act on everyone's tasks and keys."""
        return self.role is Role.ADMIN

    def may_access(self, owner: str | None) -> bool:
        """Whether this caller may see or act on something owned by `owner` (its own, or any as admin)."""
        return self.is_admin or owner == self.owner


ANONYMOUS = Principal(owner=tenancy.ANONYMOUS, role=Role.ADMIN, key_id=None, limits=UNLIMITED)
"""Every caller when `AUTH_MODE=off`."""


class AuthError(Exception):
    """The request carries no usable key; `str(error)` says why and how to send one."""


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key of a request, from `Authorization: Bearer` (preferred) or `X-API-Key`; None when absent.

    `headers` must look names up case-insensitively (Litestar's `request.headers` does) or use
    lower-case names. Raises AuthError for an `Authorization` header of another scheme.
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(f"the Authorization header must read 'Bearer <key>'; {HOW_TO_SEND}")
        return token.strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


def resolve_principal(headers: Mapping[str, str], mode: AuthMode, keyring: KeyRing | None) -> Principal:
    """The caller of a request with these headers; raises AuthError (a 401) when it has no valid key."""
    if mode == "off":
        return ANONYMOUS
    if keyring is None:
        raise ValueError("AUTH_MODE=keys needs a KeyRing")
    secret = key_from_headers(headers)
    if secret is None:
        raise AuthError(f"an API key is required: {HOW_TO_SEND}")
    record = keyring.find(secret)
    if record is None:
        raise AuthError(f"unknown API key; {HOW_TO_SEND} exactly as `acefarm keys create` printed it")
    if record.revoked:
        raise AuthError(f"this API key was revoked (key id {record.key_id}); ask an admin for a new one")
    return Principal.of_record(record)


def unauthorized(error: AuthError) -> NotAuthorizedException:
    """The 401 answer for an AuthError, with the `WWW-Authenticate: Bearer` challenge."""
    return NotAuthorizedException(detail=str(error), headers={"WWW-Authenticate": 'Bearer realm="acefarm"'})


def principal_guard(mode: AuthMode, keyring: KeyRing | None) -> Guard:
    """A Litestar guard answering 401 (before the body is read) unless the request has a valid key; the
    principal is kept in `request.state` for `principal_dependency`. Handlers flagged `SIGNED_LINKS` pass."""
    if mode == "keys" and keyring is None:
        raise ValueError("AUTH_MODE=keys needs a KeyRing")

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get(SIGNED_LINKS):
            return
        try:
            connection.state[PRINCIPAL_STATE] = resolve_principal(connection.headers, mode, keyring)
        except AuthError as error:
            raise unauthorized(error) from None

    return guard


def principal_dependency(mode: AuthMode, keyring: KeyRing | None) -> Provide:
    """A Litestar dependency (register it as `principal`) giving handlers the caller, or answering 401."""
    if mode == "keys" and keyring is None:
        raise ValueError("AUTH_MODE=keys needs a KeyRing")

    def provide_principal(request: Request[Any, Any, Any]) -> Principal:
        known: Principal | None = request.state.get(PRINCIPAL_STATE)
        if known is not None:
            return known
        try:
            return resolve_principal(request.headers, mode, keyring)
        except AuthError as error:
            raise unauthorized(error) from None

    return Provide(provide_principal, sync_to_thread=False)
