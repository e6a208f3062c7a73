"""Create-only PUTs on S3 whose answer is lost or is a spurious conflict.

A loopback TCP proxy (real sockets, a thread) sits in front of the SeaweedFS S3
server and misbehaves once, for the first conditional PUT (``If-None-Match``) of
a chosen key:

- ``lose``: forwards the request, reads the upstream answer, and closes the
  client's connection without replying: the create landed, the writer never
  heard. Its retry gets 412 for its own write.
- ``conflict``: answers ``409 ConditionalRequestConflict`` without forwarding,
  as AWS does for a conditional create racing a delete: nothing landed.

Everything else is forwarded one request per upstream connection, the answer
rewritten to ``Connection: close`` so the client never reuses a socket the
proxy is about to close.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from objstore.model.names import CollectionPath
from objstore.model.refs import RefStore
from objstore.model.store import Store
from objstore.model.versions import commit_version
from objstore.storage.backend import open_backend
from objstore.storage.backend._obstore import ObjectStoreBackend
from objstore.storage.ids import ObjectId
from objstore.storage.keys import version_ref
from objstore.storage.objects import Tree
from objstore.testing.s3proxy import MisbehavingProxy

pytestmark = pytest.mark.s3


@pytest.fixture
def proxied(s3_server: object, s3_bucket_url: str, s3_env: dict[str, str]) -> Iterator[
        tuple[ObjectStoreBackend, ObjectStoreBackend, MisbehavingProxy]]:
    """(a backend through a misbehaving proxy, a direct backend on the same bucket, the proxy).
    Set ``proxy.mode`` and ``proxy.key_suffix`` before the call that should meet it."""
    up = urlparse(s3_env["AWS_ENDPOINT_URL"])
    proxy = MisbehavingProxy((up.hostname or "127.0.0.1", up.port or 80), key_suffix="", mode="lose")
    proxy.start()
    creds = {"access_key_id": s3_env["AWS_ACCESS_KEY_ID"], "secret_access_key": s3_env["AWS_SECRET_ACCESS_KEY"],
             "region": s3_env["AWS_REGION"], "allow_http": True}
    through = ObjectStoreBackend.from_url(s3_bucket_url, endpoint=proxy.endpoint, max_attempts=4,
                                          timeout="10s", connect_timeout="2s", **creds)
    direct = open_backend(s3_bucket_url)
    assert isinstance(direct, ObjectStoreBackend)
    try:
        yield through, direct, proxy
    finally:
        through.close()
        direct.close()
        proxy.close()


def _arm(proxy: MisbehavingProxy, key: str, mode: str) -> None:
    proxy.key_suffix, proxy.mode, proxy.fired = key, mode, 0


def test_lost_response_of_a_create_that_landed_is_success(
        proxied: tuple[ObjectStoreBackend, ObjectStoreBackend, MisbehavingProxy]) -> None:
    through, direct, proxy = proxied
    _arm(proxy, "claims/mine", "lose")
    value = secrets.token_bytes(40)
    assert through.put_if_absent("claims/mine", value) is True
    assert proxy.fired == 1  # the first answer really was lost
    assert direct.get("claims/mine") == value


def test_lost_response_of_a_version_claim_is_no_renumbering(
        proxied: tuple[ObjectStoreBackend, ObjectStoreBackend, MisbehavingProxy]) -> None:
    through, direct, proxy = proxied
    ref = version_ref("ent", "proj", "model", 0)
    _arm(proxy, ref, "lose")
    mine = ObjectId(secrets.token_bytes(32))
    assert RefStore(through, who="writer").create(ref, mine, "add model:v0") is True
    assert proxy.fired == 1
    assert RefStore(direct).read(ref) == mine
    assert [k.key for k in direct.iter_prefix(ref.rsplit("/", 1)[0] + "/")] == [ref]


def test_409_conflict_with_nothing_landed_is_retried(
        proxied: tuple[ObjectStoreBackend, ObjectStoreBackend, MisbehavingProxy]) -> None:
    through, direct, proxy = proxied
    _arm(proxy, "claims/raced", "conflict")
    value = secrets.token_bytes(40)
    assert through.put_if_absent("claims/raced", value) is True
    assert proxy.fired == 1
    assert direct.get("claims/raced") == value


@pytest.mark.parametrize("mode", ["lose", "conflict", "none"])
def test_a_key_held_by_another_writer_is_not_ours(
        proxied: tuple[ObjectStoreBackend, ObjectStoreBackend, MisbehavingProxy], mode: str) -> None:
    through, direct, proxy = proxied
    theirs, ours = secrets.token_bytes(40), secrets.token_bytes(40)
    assert direct.put_if_absent("claims/taken", theirs) is True
    _arm(proxy, "claims/taken", mode)
    assert through.put_if_absent("claims/taken", ours) is False
    assert through.put_if_absent("claims/taken", theirs + b"longer") is False
    assert direct.get("claims/taken") == theirs


def test_identical_bytes_already_there_before_the_call_are_not_a_create(
        proxied: tuple[ObjectStoreBackend, ObjectStoreBackend, MisbehavingProxy]) -> None:
    # A first-attempt 412 is certain: the key was there before; odb relies on the
    # False to lift a gc mark off a pack it writes again.
    through, direct, _ = proxied
    value = secrets.token_bytes(40)
    assert direct.put_if_absent("packs/ab/same.pack", value) is True
    before = through.stats.snapshot().requests
    assert through.put_if_absent("packs/ab/same.pack", value) is False
    assert through.stats.snapshot().requests - before == 1  # a 412 needs no read-back


def test_a_version_logged_through_a_lost_answer_lands_as_v0_only(
        proxied: tuple[ObjectStoreBackend, ObjectStoreBackend, MisbehavingProxy], s3_bucket_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, direct, proxy = proxied
    coll = CollectionPath("ent", "proj", "logged")
    _arm(proxy, version_ref(coll.entity, coll.project, coll.name, 0), "lose")
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    store = Store.open(s3_bucket_url)
    try:
        tree = store.odb.put_object(Tree(()))
        resolved, created = commit_version(store, coll, tree=tree, size=0, new_bytes=0, artifact_type="model",
                                           metadata={}, description=None, run=None)
    finally:
        store.close()
    assert proxy.fired == 1
    assert created and resolved.qualified_name.endswith(":v0")
    versions = [k.key for k in direct.iter_prefix(version_ref(coll.entity, coll.project, coll.name, 0)[:-2])]
    assert versions == [version_ref(coll.entity, coll.project, coll.name, 0)]
