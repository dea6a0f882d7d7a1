"""One behaviour suite for both storage backends: local files, and S3 on moto's server over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from acefarm.infra.settings import Settings
from acefarm.infra.storage import InvalidKey, LocalStorage, S3Storage, Storage, open_storage


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend: Storage
    if request.param == "local":
        backend = LocalStorage(tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        backend = await S3Storage(f"t-{uuid.uuid4().hex[:12]}", endpoint_url=endpoint, presign_expiry_s=300).start()
    try:
        yield backend
    finally:
        await backend.close()


async def test_put_get_stat(store: Storage) -> None:
    info = await store.put_bytes("outputs/t1/take-0.wav", b"RIFF1234", "audio/wav")
    assert (info.key, info.size, info.content_type) == ("outputs/t1/take-0.wav", 8, "audio/wav")
    assert await store.get_bytes("outputs/t1/take-0.wav") == b"RIFF1234"
    stat = await store.stat("outputs/t1/take-0.wav")
    assert stat is not None and (stat.size, stat.content_type) == (8, "audio/wav")
    assert await store.stat("outputs/t1/missing.wav") is None
    with pytest.raises(FileNotFoundError):
        await store.get_bytes("outputs/t1/missing.wav")


async def test_overwrite_replaces_content_and_type(store: Storage) -> None:
    await store.put_bytes("outputs/t2/take-0.mp3", b"old", "audio/mpeg")
    await store.put_bytes("outputs/t2/take-0.mp3", b"newer", "audio/x-test")
    assert await store.get_bytes("outputs/t2/take-0.mp3") == b"newer"
    stat = await store.stat("outputs/t2/take-0.mp3")
    assert stat is not None and (stat.size, stat.content_type) == (5, "audio/x-test")


async def test_a_write_that_need_not_be_durable_stores_and_replaces_the_same_way(store: Storage) -> None:
    await store.put_bytes("attempts/t9/generation.json", b"{}", "application/json", durable=False)
    await store.put_bytes("attempts/t9/generation.json", b'{"a":1}', "application/json", durable=False)
    assert await store.get_bytes("attempts/t9/generation.json") == b'{"a":1}'
    stat = await store.stat("attempts/t9/generation.json")
    assert stat is not None and stat.content_type == "application/json"


async def test_put_file_and_download_file(store: Storage, tmp_path: Path) -> None:
    src = tmp_path / "in.flac"
    src.write_bytes(b"fLaC" + bytes(range(256)) * 64)
    info = await store.put_file("inputs/t3/src.flac", src, "audio/flac")
    assert info.size == src.stat().st_size
    dest = tmp_path / "out" / "copy.flac"
    await store.download_file("inputs/t3/src.flac", dest)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        await store.download_file("inputs/t3/nothing.flac", tmp_path / "none.flac")
    assert not (tmp_path / "none.flac").exists()


async def test_list_delete_and_delete_prefix(store: Storage) -> None:
    for key in ("outputs/a1/take-0.wav", "outputs/a1/take-1.wav", "outputs/a12/take-0.wav", "loras/x/manifest.json"):
        await store.put_bytes(key, key.encode(), "application/octet-stream")
    assert [i.key for i in await store.list("outputs/a1/")] == ["outputs/a1/take-0.wav", "outputs/a1/take-1.wav"]
    assert [i.key for i in await store.list("outputs/a1")] == [
        "outputs/a1/take-0.wav",
        "outputs/a1/take-1.wav",
        "outputs/a12/take-0.wav",
    ]
    assert {i.size for i in await store.list("outputs/a1/")} == {len("outputs/a1/take-0.wav")}
    assert len(await store.list("")) == 4
    assert await store.list("nothing/") == []

    await store.delete("outputs/a1/take-1.wav")
    await store.delete("outputs/a1/take-1.wav")  # absent: no error
    assert [i.key for i in await store.list("outputs/")] == ["outputs/a1/take-0.wav", "outputs/a12/take-0.wav"]

    assert await store.delete_prefix("outputs/") == 2
    assert await store.list("outputs/") == []
    assert [i.key for i in await store.list("")] == ["loras/x/manifest.json"]


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a/../../b", "./a", "a\\b", "", "a/.hidden", "x" * 600])
async def test_keys_escaping_the_store_are_rejected(store: Storage, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put_bytes(key, b"x", "text/plain")
    with pytest.raises(InvalidKey):
        await store.get_bytes(key)
    with pytest.raises(InvalidKey):
        await store.stat(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    with pytest.raises(InvalidKey):
        store.local_path(key)


async def test_prefixes_escaping_the_store_are_rejected(store: Storage) -> None:
    for prefix in ("../", "/etc", "a//"):
        with pytest.raises(InvalidKey):
            await store.list(prefix)
        with pytest.raises(InvalidKey):
            await store.delete_prefix(prefix)


async def test_download_url(store: Storage) -> None:
    await store.put_bytes("outputs/t4/take-0.flac", b"fLaC-data", "audio/flac")
    url = await store.presigned_url("outputs/t4/take-0.flac")
    if isinstance(store, LocalStorage):
        assert url is None
        path = store.local_path("outputs/t4/take-0.flac")
        assert path is not None and path.read_bytes() == b"fLaC-data"
        return
    assert url is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"fLaC-data"
    assert response.headers["content-type"] == "audio/flac"


async def test_local_symlink_out_of_root_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    store = LocalStorage(tmp_path / "root")
    (store.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        await store.get_bytes("link/secret.txt")
    (store.root / "outputs/t").mkdir(parents=True)
    (store.root / "outputs/t/deep").symlink_to(outside)
    with pytest.raises(InvalidKey):
        await store.put_bytes("outputs/t/deep/take-0.wav", b"RIFF", "audio/wav")
    assert not (outside / "take-0.wav").exists()


async def test_local_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    await store.put_bytes("inputs/t/src.wav", b"RIFF", "audio/wav")
    (store.root / "alias").symlink_to(store.root / "inputs")
    assert await store.get_bytes("alias/t/src.wav") == b"RIFF"


async def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    await store.put_bytes("outputs/t5/take-0.wav", b"abc", "audio/wav")
    names = sorted(p.name for p in (store.root / "outputs" / "t5").iterdir())
    assert names == [".take-0.wav.ctype", "take-0.wav"]
    await store.delete("outputs/t5/take-0.wav")
    assert not (store.root / "outputs").exists()


async def test_open_storage_picks_the_backend(tmp_path: Path, s3_endpoint: str) -> None:
    local = open_storage(Settings(storage_backend="local", output_dir=tmp_path / "d"))
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "d").resolve()
    bucket = f"o-{uuid.uuid4().hex[:12]}"
    s3 = open_storage(Settings(storage_backend="s3", storage_bucket=bucket, s3_endpoint_url=s3_endpoint))
    assert isinstance(s3, S3Storage)
    try:
        await s3.put_bytes("outputs/t6/a.wav", b"1", "audio/wav")  # creates the bucket on first use
        assert await s3.get_bytes("outputs/t6/a.wav") == b"1"
    finally:
        await s3.close()


async def test_s3_large_file_goes_up_in_parts(tmp_path: Path, s3_endpoint: str) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * (11 * 4096))  # 11 MiB: three 5 MiB parts
    store = await S3Storage(f"m-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint, part_size=5 << 20).start()
    try:
        info = await store.put_file("datasets/t7.zip", src, "application/zip")
        stat = await store.stat("datasets/t7.zip")
        assert stat is not None and (stat.size, stat.content_type) == (info.size, "application/zip")
        dest = tmp_path / "back.bin"
        await store.download_file("datasets/t7.zip", dest)
        assert dest.read_bytes() == src.read_bytes()
    finally:
        await store.close()


async def test_s3_download_urls_are_signed_for_the_public_endpoint(s3_endpoint: str) -> None:
    # The services reach S3 at 127.0.0.1, clients at "localhost": the URL must name (and be signed for)
    # the public address, and still download.
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    store = await S3Storage(f"p-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint, public_endpoint_url=public).start()
    try:
        await store.put_bytes("outputs/t8/take-0.wav", b"RIFF-data", "audio/wav")
        url = await store.presigned_url("outputs/t8/take-0.wav")
        assert url is not None and url.startswith(public)
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        assert response.status_code == 200
        assert response.content == b"RIFF-data"
    finally:
        await store.close()
