"""Signed links: valid for their path, owner and lifetime only; forged, altered or expired links are refused."""

from urllib.parse import parse_qsl, urlsplit

import pytest

from acefarm.infra.settings import Settings
from gateway.signed_links import LinkSigner

SECRET = b"s" * 32


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_signed_path_verifies_as_its_owner_until_it_expires() -> None:
    clock = Clock()
    signer = LinkSigner(SECRET, max_ttl_s=600, clock=clock)
    url = urlsplit(signer.signed_path("/files/outputs/t1/take-0.wav", "alice", ttl_s=60))
    query = dict(parse_qsl(url.query))
    assert url.path == "/files/outputs/t1/take-0.wav" and query["exp"] == str(int(clock.now) + 60)
    assert signer.verify(url.path, query) == "alice"
    clock.now += 61
    assert signer.verify(url.path, query) is None


def test_stable_links_agree_within_a_step_and_still_expire() -> None:
    clock = Clock()
    signer = LinkSigner(SECRET, max_ttl_s=3600, clock=clock)
    first = signer.sign("/p", "alice", stable=True)
    clock.now += 30
    assert signer.sign("/p", "alice", stable=True) == first
    assert int(clock.now) + 3600 - 60 < int(first["exp"]) <= int(clock.now) + 3600
    assert signer.verify("/p", first) == "alice"
    clock.now = int(first["exp"])
    assert signer.verify("/p", first) is None


def test_altered_or_foreign_links_are_refused() -> None:
    signer = LinkSigner(SECRET, max_ttl_s=600)
    path = "/files/outputs/t1/take-0.wav"
    query = signer.sign(path, "alice")
    assert signer.verify(path, query) == "alice"
    assert signer.verify("/files/outputs/t2/take-0.wav", query) is None
    assert signer.verify(path, query | {"owner": "bob"}) is None
    assert signer.verify(path, query | {"exp": str(int(query["exp"]) - 1)}) is None
    assert signer.verify(path, query | {"sig": "é" + query["sig"][1:]}) is None
    assert signer.verify(path, {k: v for k, v in query.items() if k != "sig"}) is None
    assert signer.verify(path, query | {"exp": "soon"}) is None
    assert LinkSigner(b"t" * 32, max_ttl_s=600).verify(path, query) is None  # another replica's secret


def test_lifetime_is_capped_and_a_lowered_cap_refuses_older_links() -> None:
    clock = Clock()
    long_lived = LinkSigner(SECRET, max_ttl_s=86_400, clock=clock)
    query = long_lived.sign("/p", "alice", ttl_s=10**9)
    assert int(query["exp"]) == int(clock.now) + 86_400
    assert LinkSigner(SECRET, max_ttl_s=3600, clock=clock).verify("/p", query) is None
    assert long_lived.verify("/p", query) == "alice"


def test_secret_from_settings_or_random_per_process() -> None:
    configured = Settings(link_signing_secret="x" * 40, signed_link_ttl_s=120)
    a, b = LinkSigner.from_settings(configured), LinkSigner.from_settings(configured)
    assert a.max_ttl_s == 120 and b.verify("/p", a.sign("/p", "alice")) == "alice"
    one, two = LinkSigner.from_settings(Settings()), LinkSigner.from_settings(Settings())
    assert two.verify("/p", one.sign("/p", "alice")) is None  # why production sets LINK_SIGNING_SECRET
    with pytest.raises(ValueError, match="at least 32"):
        Settings(link_signing_secret="short")
