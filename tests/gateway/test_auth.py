"""Resolving the caller: Bearer or X-API-Key against the key ring, 401s that say how to send a key, AUTH_MODE=off."""

from typing import Any

import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.testing import TestClient

from acefarm.infra.settings import Settings
from gateway.auth import (
    ANONYMOUS,
    AuthError,
    AuthMode,
    Principal,
    key_from_headers,
    principal_dependency,
    resolve_principal,
)
from gateway.errors import client_error_handler
from gateway.keyring import KeyRing
from schemas.keys import ApiKeyRecord, Role


def ring_with(*records: ApiKeyRecord) -> KeyRing:
    """A key ring fed directly with records, as its topic reader would feed it."""
    ring = KeyRing(Settings())
    for record in records:
        ring.table.apply(record.key_id.encode(), record.to_bytes())
    return ring


def test_key_comes_from_bearer_or_x_api_key() -> None:
    assert key_from_headers({"authorization": "Bearer abc"}) == "abc"
    assert key_from_headers({"authorization": "bearer  abc "}) == "abc"
    assert key_from_headers({"x-api-key": "xyz"}) == "xyz"
    assert key_from_headers({"authorization": "Bearer abc", "x-api-key": "xyz"}) == "abc"
    assert key_from_headers({}) is None
    with pytest.raises(AuthError, match="must read 'Bearer <key>'"):
        key_from_headers({"authorization": "Basic dXNlcjpwdw=="})


def test_resolve_knows_users_admins_and_refuses_the_rest() -> None:
    alice, alice_secret = ApiKeyRecord.issue("alice")
    root, root_secret = ApiKeyRecord.issue("root", Role.ADMIN)
    gone, gone_secret = ApiKeyRecord.issue("gone")
    ring = ring_with(alice, root, gone, gone.revoke())
    user = resolve_principal({"authorization": f"Bearer {alice_secret}"}, "keys", ring)
    assert user == Principal("alice", Role.USER, alice.key_id, alice.limits)
    assert not user.is_admin and user.may_access("alice") and not user.may_access("bob")
    admin = resolve_principal({"x-api-key": root_secret}, "keys", ring)
    assert admin.is_admin and admin.may_access("bob")
    assert ring.authenticate(alice_secret) == user and ring.authenticate(gone_secret) is None
    with pytest.raises(AuthError, match="revoked"):
        resolve_principal({"x-api-key": gone_secret}, "keys", ring)
    with pytest.raises(AuthError, match="unknown API key"):
        resolve_principal({"x-api-key": alice_secret[:-2] + "zz"}, "keys", ring)
    with pytest.raises(AuthError, match="an API key is required"):
        resolve_principal({}, "keys", ring)


def test_auth_off_makes_everyone_the_anonymous_admin() -> None:
    assert resolve_principal({}, "off", None) is ANONYMOUS
    assert ANONYMOUS.owner == "anonymous" and ANONYMOUS.is_admin
    with pytest.raises(ValueError, match="needs a KeyRing"):
        principal_dependency("keys", None)


@get("/whoami", sync_to_thread=False)
def whoami(principal: NamedDependency[Principal]) -> dict[str, Any]:
    return {"owner": principal.owner, "admin": principal.is_admin}


@get("/healthz", sync_to_thread=False)
def healthz() -> str:
    return "ok"


def app(ring: KeyRing | None, mode: AuthMode = "keys") -> Litestar:
    return Litestar(
        [whoami, healthz],
        dependencies={"principal": principal_dependency(mode, ring)},
        exception_handlers={ClientException: client_error_handler},
    )


def test_litestar_dependency_answers_401_with_a_bearer_challenge() -> None:
    alice, secret = ApiKeyRecord.issue("alice")
    gone, gone_secret = ApiKeyRecord.issue("gone")
    with TestClient(app(ring_with(alice, gone.revoke()))) as client:
        assert client.get("/whoami", headers={"Authorization": f"Bearer {secret}"}).json() == {
            "owner": "alice",
            "admin": False,
        }
        missing = client.get("/whoami")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer <key>" in missing.json()["detail"]
        revoked = client.get("/whoami", headers={"X-API-Key": gone_secret})
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
        assert client.get("/healthz").status_code == 200  # a handler that takes no principal stays public
    with TestClient(app(None, "off")) as client:
        assert client.get("/whoami").json() == {"owner": "anonymous", "admin": True}
