"""s3:// reference artifacts against the real SeaweedFS server: recorded with
size, ETag and BLAKE3, downloaded byte-identical, refused once the object changed."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest
from conftest import S3Server, s3_request

import objstore
from objstore.errors import NotFound, VerificationFailed

pytestmark = pytest.mark.s3


def put_object(server: S3Server, bucket: str, key: str, data: bytes) -> None:
    status, body = s3_request("PUT", server.endpoint, f"/{bucket}/{key}", server.access_key, server.secret_key, data)
    assert status == 200, (status, body[:200])


def test_reference_downloads_identical_and_refuses_a_changed_object(
        tmp_path: Path, s3_server: S3Server, s3_bucket_url: str) -> None:
    bucket = s3_bucket_url[len("s3://"):].split("/", 1)[0]
    data = os.urandom(3 * 1024 * 1024 + 17)
    put_object(s3_server, bucket, "weights/model.bin", data)
    with objstore.init(project="refs", entity="team", store=tmp_path / "store") as run:
        art = objstore.Artifact("ext", type="model")
        art.add_reference(f"s3://{bucket}/weights/model.bin")
        run.log_artifact(art)
        [entry] = art.files()
        assert (entry.kind, entry.size, entry.ref) == ("reference", len(data), f"s3://{bucket}/weights/model.bin")
        # A one-file model: use_model returns the file itself, as for a logged file.
        out = Path(run.use_model("ext:v0", root=tmp_path / "dl"))
        assert out == tmp_path / "dl" / "model.bin"
        assert out.read_bytes() == data

    put_object(s3_server, bucket, "weights/model.bin", data[:-1] + bytes([data[-1] ^ 1]))  # same size, new bytes
    api_art = objstore.Api(store=tmp_path / "store").artifact("team/refs/ext:v0")
    with pytest.raises(VerificationFailed, match=f"s3://{bucket}/weights/model.bin") as info:
        api_art.download(tmp_path / "dl2")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "dl2" / "model.bin").exists()


def test_log_model_of_a_prefix_records_every_object(tmp_path: Path, s3_server: S3Server, s3_bucket_url: str) -> None:
    bucket = s3_bucket_url[len("s3://"):].split("/", 1)[0]
    files = {"config.json": b'{"layers": 2}', "shards/a.bin": os.urandom(1000), "shards/b.bin": os.urandom(2000)}
    for rel, body in files.items():
        put_object(s3_server, bucket, f"ckpt/{rel}", body)
    with objstore.init(project="refs", entity="team", store=tmp_path / "store") as run:
        art = run.log_model(f"s3://{bucket}/ckpt", name="ckpt")
        listed = {f.path: f for f in art.files()}
        assert set(listed) == set(files)
        assert all(f.kind == "reference" and f.size == len(files[p]) for p, f in listed.items())
        root = Path(run.use_model("ckpt:latest", root=tmp_path / "dl"))
    for rel, body in files.items():
        assert (root / rel).read_bytes() == body
    # checksum=True (the default) recorded the bytes' BLAKE3 and the ETag.
    store = objstore.Store.open_existing(tmp_path / "store")
    from objstore.model.names import parse_version_spec
    from objstore.model.versions import resolve
    from objstore.storage.trees import walk_tree

    resolved = resolve(store, parse_version_spec("team/refs/ckpt:v0", entity=None, project=None))
    extras = {rel: e.extra for rel, e in walk_tree(store.odb, resolved.version.tree)}
    assert extras["shards/a.bin"]["blake3"] == blake3.blake3(files["shards/a.bin"]).hexdigest()
    assert extras["shards/a.bin"]["etag"]

    status, _ = s3_request("DELETE", s3_server.endpoint, f"/{bucket}/ckpt/shards/b.bin", s3_server.access_key, s3_server.secret_key)
    assert status in (200, 204)
    with pytest.raises(NotFound, match="ckpt/shards/b.bin"):
        objstore.Api(store=store).artifact("team/refs/ckpt:v0").download(tmp_path / "dl3")


def test_missing_reference_is_a_clear_error(tmp_path: Path, s3_bucket_url: str) -> None:
    bucket = s3_bucket_url[len("s3://"):].split("/", 1)[0]
    art = objstore.Artifact("ext", type="model")
    with pytest.raises(NotFound, match="names no object"):
        art.add_reference(f"s3://{bucket}/nothing/here")
