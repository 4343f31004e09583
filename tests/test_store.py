"""The write-once stores: moto in-process, a moto server over real HTTP, and the local dir."""

from __future__ import annotations

import threading

import boto3
import pytest
from moto import mock_aws

from edgeocr.store import CACHE_CONTROL, LocalStore, S3Store
from s3fixtures import FAKE_CREDENTIALS

KEY = "results/0123456789abcdef/" + "a" * 64 + ".json"


def check_write_once(store, read_headers):
    assert store.get(KEY) is None
    first = store.put_if_absent(KEY, b'{"v": 1}')
    assert first.created and first.obj.body == b'{"v": 1}'
    second = store.put_if_absent(KEY, b'{"v": 2}')
    assert not second.created
    assert second.obj.body == b'{"v": 1}'  # the winner's object, not ours
    got = store.get(KEY)
    assert got.body == b'{"v": 1}'
    headers = read_headers(KEY)
    if headers is not None:
        assert headers["ContentType"] == "application/json"
        assert headers["CacheControl"] == CACHE_CONTROL


def test_s3_store_in_process(monkeypatch):
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="edgeocr-results")
        store = S3Store("edgeocr-results")
        check_write_once(store, lambda k: client.head_object(Bucket="edgeocr-results", Key=k))


def test_s3_store_over_http(s3_env):
    store = S3Store(s3_env)  # endpoint from AWS_ENDPOINT_URL_S3, boto3's own variable
    assert "127.0.0.1" in store.client.meta.endpoint_url
    client = boto3.client("s3")
    check_write_once(store, lambda k: client.head_object(Bucket=s3_env, Key=k))


def race(store, writers: int = 16) -> list:
    """``writers`` threads put different bodies under one key at the same instant."""
    barrier = threading.Barrier(writers)
    outcomes = []

    def write(i: int) -> None:
        barrier.wait()
        outcomes.append(store.put_if_absent(KEY, f'{{"writer": {i}}}'.encode()))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o.created for o in outcomes) == 1
    assert len({o.obj.body for o in outcomes}) == 1
    return outcomes


def test_s3_race_leaves_exactly_one_object(s3_env):
    """16 writers race on one key through the moto server: one creates, all agree."""
    race(S3Store(s3_env))
    listing = boto3.client("s3").list_objects_v2(Bucket=s3_env, Prefix="results/")
    assert [o["Key"] for o in listing["Contents"]] == [KEY]


def test_local_store(tmp_path):
    check_write_once(LocalStore(tmp_path), lambda k: None)
    assert not [p for p in tmp_path.rglob(".tmp-*")]  # no temp files left behind


def test_local_store_race(tmp_path):
    race(LocalStore(tmp_path))


ABSOLUTE = "<absolute path to outside/abs.json>"
ESCAPING_KEYS = ["../outside/x.json", "../../etc/passwd", "results/../../outside/y.json",
                 ABSOLUTE, "", ".", "link/z.json"]
OPERATIONS = {
    "get": lambda store, key: store.get(key),
    "put_if_absent": lambda store, key: store.put_if_absent(key, b'{"v": 1}'),
    "put": lambda store, key: store.put(key, b'{"v": 1}'),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_local_store_refuses_escaping_keys(tmp_path, operation, key):
    """Every operation refuses a key that leads outside the store (``..``, an absolute
    path, the root itself, a symlink out), and writes nothing anywhere."""
    root, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    store = LocalStore(root)
    (root / "link").symlink_to(outside, target_is_directory=True)
    if key == ABSOLUTE:
        key = str(outside / "abs.json")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="escapes the store"):
        OPERATIONS[operation](store, key)
    assert sorted(tmp_path.rglob("*")) == before


def test_local_store_keeps_keys_that_stay_inside(tmp_path):
    """Control for the test above: ``..`` that stays inside the store is just a path."""
    store = LocalStore(tmp_path)
    assert store.put_if_absent("results/a/../b.json", b"{}").created
    assert store.get("results/b.json").body == b"{}"
