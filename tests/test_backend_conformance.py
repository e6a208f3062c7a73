"""One conformance suite for every backend (local directory and S3 via SeaweedFS).

Each test gets a fresh, empty backend from the ``backend`` fixture in conftest;
the same assertions hold for both. Error-path tests for S3 (dead endpoint,
missing bucket, bad or missing credentials) are at the end.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from objstore.errors import BackendError, Conflict, InvalidName, NotFound
from objstore.storage.backend import Backend, KeyInfo, LocalBackend, open_backend
from objstore.storage.backend.base import BackendStats

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent


def is_s3(backend: Backend) -> bool:
    return not isinstance(backend, LocalBackend)


# -- basic reads and writes -----------------------------------------------------

def test_protocol_and_fresh_store_is_empty(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert list(backend.iter_prefix("")) == []


def test_put_get_round_trip(backend: Backend) -> None:
    values = {
        "plain": b"hello",
        "nested/deeper/key.bin": bytes(range(256)) * 3,
        "empty": b"",
        "packs/ab/abcdef.pack": os.urandom(100_000),
    }
    for key, value in values.items():
        backend.put(key, value)
    for key, value in values.items():
        assert backend.get(key) == value
        assert backend.stat(key).size == len(value)
    backend.put("plain", memoryview(b"replaced"))
    assert backend.get("plain") == b"replaced"


def test_missing_key_raises_not_found(backend: Backend) -> None:
    backend.put("present", b"x")
    for call in (lambda: backend.get("absent"), lambda: backend.stat("absent"),
                 lambda: backend.get_range("absent", 0, 4), lambda: backend.get("dir/absent")):
        with pytest.raises(NotFound) as info:
            call()
        assert isinstance(info.value, FileNotFoundError)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/"])
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(InvalidName):
        backend.put(key, b"x")


def test_ranged_reads(backend: Backend) -> None:
    data = bytes(range(100))
    backend.put("r", data)
    assert backend.get_range("r", 0, 10) == data[:10]
    assert backend.get_range("r", 37, 5) == data[37:42]
    assert backend.get_range("r", 95, 10) == data[95:]  # crosses the end: fewer bytes
    assert backend.get_range("r", 99, 1) == data[99:]
    assert backend.get_range("r", 100, 10) == b""  # starts at the end
    assert backend.get_range("r", 500, 10) == b""  # starts past the end
    assert backend.get_range("r", 3, 0) == b""
    backend.put("e", b"")
    assert backend.get_range("e", 0, 10) == b""


def test_stat_reports_size_and_recent_mtime(backend: Backend) -> None:
    before = time.time()
    backend.put("k", b"12345")
    info = backend.stat("k")
    assert info == KeyInfo("k", 5, info.mtime)
    assert before - 120 < info.mtime < time.time() + 120  # S3 has 1 s resolution and clock skew


def test_delete_is_idempotent(backend: Backend) -> None:
    backend.put("d/k", b"x")
    backend.delete("d/k")
    backend.delete("d/k")
    backend.delete("never/was")
    with pytest.raises(NotFound):
        backend.get("d/k")
    assert backend.put_if_absent("d/k", b"again")
    assert backend.get("d/k") == b"again"


# -- listing ------------------------------------------------------------------------

def test_iter_prefix_is_a_string_prefix(backend: Backend) -> None:
    """The contract: every key *starting with* the prefix. "refs/a" also lists
    "refs/ab"; a caller who means the directory asks for "refs/a/"."""
    keys = {"refs/a/x": b"1", "refs/a/y/z": b"22", "refs/ab": b"333", "refs/a-b": b"4",
            "refs/b/c": b"5", "refsx": b"6", "other/q": b"7"}
    for key, value in keys.items():
        backend.put(key, value)

    def listed(prefix: str) -> dict[str, int]:
        return {info.key: info.size for info in backend.iter_prefix(prefix)}

    def expected(prefix: str) -> dict[str, int]:
        return {k: len(v) for k, v in keys.items() if k.startswith(prefix)}

    for prefix in ["", "r", "refs", "refs/", "refs/a", "refs/a/", "refs/a-", "refs/a/y", "refs/a/y/z",
                   "refs/ab", "refs/b", "refs/c", "refsx", "other/", "zzz"]:
        assert listed(prefix) == expected(prefix), prefix
    assert set(listed("refs/a/")) == {"refs/a/x", "refs/a/y/z"}
    assert "refs/ab" in listed("refs/a")


def test_iter_prefix_sees_many_keys(backend: Backend) -> None:
    # More than one list page on S3 would need >1000 keys; 150 still checks batching logic.
    for i in range(150):
        backend.put(f"many/{i:04d}", b"x")
    backend.put("manyx", b"x")
    assert sorted(info.key for info in backend.iter_prefix("many/")) == [f"many/{i:04d}" for i in range(150)]
    assert len(list(backend.iter_prefix("many"))) == 151


def test_keys_named_like_internal_files_round_trip_and_are_listed(backend: Backend) -> None:
    """A backend's own locks and temp files never share a name with a key: keys
    ending like them are ordinary keys, and a CAS of ``k`` leaves ``k.lock`` alone."""
    keys = {"refs/a/x": b"x\n", "refs/a/x.lock": b"lock-named\n", "refs/a/x.lock.break.lock": b"guard-named\n",
            "refs/a/x.lock.123-abcdef01.lock": b"token-named\n", "refs/a/x.tmp": b"tmp-named\n",
            "refs/a/.x.objstore-1234": b"hidden\n", "refs/a/y.lock": b""}
    for key, value in keys.items():
        backend.compare_and_swap(key, None, value)
    backend.compare_and_swap("refs/a/x", b"x\n", b"x2\n")
    backend.compare_and_swap("refs/a/x.lock", b"lock-named\n", b"lock-moved\n")
    keys["refs/a/x"], keys["refs/a/x.lock"] = b"x2\n", b"lock-moved\n"
    for key, value in keys.items():
        assert backend.get(key) == value, key
    assert {i.key: i.size for i in backend.iter_prefix("refs/")} == {k: len(v) for k, v in keys.items()}
    assert {i.key for i in backend.iter_prefix("")} == set(keys)


# -- create-only writes ---------------------------------------------------------------

def test_put_if_absent(backend: Backend) -> None:
    assert backend.put_if_absent("obj", b"first") is True
    assert backend.put_if_absent("obj", b"second") is False
    assert backend.get("obj") == b"first"


def test_put_if_absent_thread_race_has_one_winner(backend: Backend) -> None:
    n = 6
    barrier = threading.Barrier(n)
    results: dict[int, bool] = {}

    def writer(i: int) -> None:
        barrier.wait()
        results[i] = backend.put_if_absent("contested", f"writer-{i}".encode())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == n and len(winners) == 1
    assert backend.get("contested") == f"writer-{winners[0]}".encode()


_CHILD_PRELUDE = """
import os, sys, time
sys.path.insert(0, {root!r})
from objstore.storage.backend import open_backend
from objstore.errors import Conflict
backend = open_backend({url!r})
go = {go!r}
while not os.path.exists(go):
    time.sleep(0.005)
"""


def _run_children(backend: Backend, tmp_path: Path, n: int, body: str) -> list[str]:
    """Start n real processes running ``body`` against ``backend.url``; release them at once."""
    go = tmp_path / f"go-{secrets.token_hex(4)}"
    script = textwrap.dedent(_CHILD_PRELUDE.format(root=str(REPO_ROOT), url=str(backend.url), go=str(go)))
    script += textwrap.dedent(body)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    time.sleep(0.3)  # let them import and wait at the start line
    go.write_text("go")
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_put_if_absent_process_race_has_one_winner(backend: Backend, tmp_path: Path) -> None:
    outputs = _run_children(backend, tmp_path, 4, """
        me = sys.argv[1]
        print("won" if backend.put_if_absent("race/key", ("proc-" + me).encode()) else "lost")
    """)
    assert sorted(outputs) == ["lost", "lost", "lost", "won"]
    winner = outputs.index("won")
    assert backend.get("race/key") == f"proc-{winner}".encode()


# -- compare-and-swap ------------------------------------------------------------------

def test_cas_creates_when_expected_none(backend: Backend) -> None:
    backend.compare_and_swap("refs/x", None, b"v1")
    assert backend.get("refs/x") == b"v1"
    with pytest.raises(Conflict) as info:
        backend.compare_and_swap("refs/x", None, b"v2")
    assert info.value.key == "refs/x"
    assert info.value.expected is None and info.value.actual == b"v1"
    assert backend.get("refs/x") == b"v1"


def test_cas_replaces_only_the_expected_value(backend: Backend) -> None:
    backend.compare_and_swap("refs/x", None, b"v1")
    backend.compare_and_swap("refs/x", b"v1", b"v2")
    assert backend.get("refs/x") == b"v2"
    with pytest.raises(Conflict) as info:
        backend.compare_and_swap("refs/x", b"v1", b"v3")
    assert info.value.expected == b"v1" and info.value.actual == b"v2"
    assert backend.get("refs/x") == b"v2"
    assert "\n" not in str(info.value)


def test_cas_on_missing_key_with_expected_value_conflicts(backend: Backend) -> None:
    with pytest.raises(Conflict) as info:
        backend.compare_and_swap("refs/none", b"v1", b"v2")
    assert info.value.actual is None
    with pytest.raises(NotFound):
        backend.get("refs/none")


def test_cas_tombstone(backend: Backend) -> None:
    backend.compare_and_swap("refs/t", None, b"v1")
    backend.compare_and_swap("refs/t", b"v1", b"")  # delete = swap to a tombstone
    assert backend.get("refs/t") == b""
    with pytest.raises(Conflict) as info:
        backend.compare_and_swap("refs/t", None, b"v2")  # a tombstone is not absence
    assert info.value.actual == b""
    backend.compare_and_swap("refs/t", b"", b"v2")
    assert backend.get("refs/t") == b"v2"


def test_cas_same_bytes_rewritten_still_matches(backend: Backend) -> None:
    # The value is compared by bytes, not by who wrote it.
    backend.compare_and_swap("refs/s", None, b"same")
    backend.put("refs/s", b"same")
    backend.compare_and_swap("refs/s", b"same", b"next")
    assert backend.get("refs/s") == b"next"


def test_cas_after_its_own_write_still_sees_another_writers_change(backend: Backend) -> None:
    """A writer's compare-and-swap right after its own write of the key (the object
    store backend then sends its conditional PUT against the ETag it was answered,
    without reading first) is still refused when another writer changed the key in
    between, and still lands when the other writer put the very bytes back."""
    other = open_backend(backend.url)
    assert backend.put_if_absent("refs/m", b"v1")
    other.compare_and_swap("refs/m", b"v1", b"v2")
    with pytest.raises(Conflict) as info:
        backend.compare_and_swap("refs/m", b"v1", b"v3")
    assert info.value.actual == b"v2"
    backend.compare_and_swap("refs/m", b"v2", b"v4")
    other.compare_and_swap("refs/m", b"v4", b"v5")
    other.compare_and_swap("refs/m", b"v5", b"v4")  # the same bytes back, written anew
    backend.compare_and_swap("refs/m", b"v4", b"v6")
    assert other.get("refs/m") == b"v6"
    if not isinstance(backend, LocalBackend):
        before = backend.stats.requests
        backend.compare_and_swap("refs/m", b"v6", b"v7")  # nobody wrote since its own swap
        assert backend.stats.requests - before == 1  # the conditional PUT alone
    other.close()


def test_cas_counter_threads_lose_no_increment(backend: Backend) -> None:
    backend.compare_and_swap("counter", None, b"0")
    n_threads, per_thread = 4, 5

    def incrementer() -> None:
        done = 0
        current = backend.get("counter")
        while done < per_thread:
            try:
                backend.compare_and_swap("counter", current, str(int(current) + 1).encode())
            except Conflict as exc:
                assert exc.actual is not None
                current = exc.actual
                continue
            current = str(int(current) + 1).encode()
            done += 1

    threads = [threading.Thread(target=incrementer) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.get("counter") == str(n_threads * per_thread).encode()


def test_cas_counter_processes_lose_no_increment(backend: Backend, tmp_path: Path) -> None:
    backend.compare_and_swap("counter", None, b"0")
    n_procs, per_proc = 3, 5
    outputs = _run_children(backend, tmp_path, n_procs, f"""
        done = conflicts = 0
        current = backend.get("counter")
        while done < {per_proc}:
            try:
                backend.compare_and_swap("counter", current, str(int(current) + 1).encode())
            except Conflict as exc:
                conflicts += 1
                current = exc.actual
                continue
            current = str(int(current) + 1).encode()
            done += 1
        print(done)
    """)
    assert outputs == [str(per_proc)] * n_procs
    assert backend.get("counter") == str(n_procs * per_proc).encode()


# -- large files -------------------------------------------------------------------

def _random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.fixture
def small_multipart_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send files over 8 MiB as multipart uploads, so tests reach that path with small files."""
    from objstore.storage.backend import _obstore

    monkeypatch.setattr(_obstore, "MULTIPART_THRESHOLD", 8 * MiB)


@pytest.mark.parametrize("multipart", [False, True], ids=["one-put", "multipart"])
def test_large_file_put_file_if_absent(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest, multipart: bool) -> None:
    if multipart:
        request.getfixturevalue("small_multipart_threshold")
    size = 40 * MiB + 12345  # several multipart parts on S3, with a ragged last part
    data = _random_file(tmp_path / "big.bin", size)
    assert backend.put_file_if_absent("packs/big.pack", tmp_path / "big.bin") is True
    assert backend.stat("packs/big.pack").size == size
    for start, length in [(0, 100), (8 * MiB - 3, 7), (20 * MiB, 4096), (size - 10, 100), (size, 5)]:
        assert backend.get_range("packs/big.pack", start, length) == data[start:start + length]
    assert backend.get("packs/big.pack") == data
    _random_file(tmp_path / "other.bin", 9 * MiB)
    assert backend.put_file_if_absent("packs/big.pack", tmp_path / "other.bin") is False
    assert backend.get_range("packs/big.pack", 0, 100) == data[:100]
    # Staging objects never show in listings.
    assert [info.key for info in backend.iter_prefix("")] == ["packs/big.pack"]


def _race_large_files(backend: Backend, key: str, paths: list[Path]) -> dict[int, bool]:
    barrier = threading.Barrier(len(paths))
    results: dict[int, bool] = {}
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        barrier.wait()
        try:
            results[i] = backend.put_file_if_absent(key, paths[i])
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_large_file_race_leaves_one_writers_bytes(backend: Backend, tmp_path: Path,
                                                  small_multipart_threshold: None) -> None:
    """Three writers create one large key with different bytes.

    Every writer returns and the key holds one winner's bytes, whole. Locally
    exactly one wins. On S3 a large file is created by a multipart copy completed
    under ``If-None-Match: *``, and SeaweedFS (4.44 to at least 4.48) checks that
    header before its CompleteMultipartUpload writes, not with the write: two
    writers completing together may both be told they created the key, and the
    later one's bytes stay (seen under load: two winners). objstore creates only
    content-addressed keys this way (packs, chunk index files), whose every writer
    holds the same bytes, so there a second "create" rewrites identical bytes
    (the next test); refs, config and every other create-only key go through
    ``put_if_absent``, one PUT the server conditions atomically
    (``test_put_if_absent_*_race_has_one_winner``).
    """
    contents = [_random_file(tmp_path / f"f{i}", 9 * MiB) for i in range(3)]
    results = _race_large_files(backend, "packs/race.pack", [tmp_path / f"f{i}" for i in range(3)])
    winners = [i for i, won in results.items() if won]
    assert len(results) == 3 and winners
    if not is_s3(backend):
        assert len(winners) == 1
    assert backend.get("packs/race.pack") in [contents[i] for i in winners]
    assert [info.key for info in backend.iter_prefix("")] == ["packs/race.pack"]


def test_large_file_race_of_identical_bytes_stores_them(backend: Backend, tmp_path: Path,
                                                        small_multipart_threshold: None) -> None:
    """What objstore relies on for packs: racing writers of the same bytes all succeed."""
    data = _random_file(tmp_path / "f0", 9 * MiB)
    for i in (1, 2):
        (tmp_path / f"f{i}").write_bytes(data)
    results = _race_large_files(backend, "packs/same.pack", [tmp_path / f"f{i}" for i in range(3)])
    assert len(results) == 3 and any(results.values())
    assert backend.get("packs/same.pack") == data
    assert [info.key for info in backend.iter_prefix("")] == ["packs/same.pack"]


def test_small_file_put_file_if_absent(backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"small file")
    assert backend.put_file_if_absent("objs/small", tmp_path / "small") is True
    (tmp_path / "small2").write_bytes(b"different")
    assert backend.put_file_if_absent("objs/small", tmp_path / "small2") is False
    assert backend.get("objs/small") == b"small file"


# -- counters -------------------------------------------------------------------------

def test_stats_count_requests_and_bytes(backend: Backend) -> None:
    assert isinstance(backend.stats, BackendStats)
    before = backend.stats.snapshot()
    backend.put("s/k", b"x" * 1000)
    after_put = backend.stats.snapshot()
    assert after_put.requests > before.requests
    assert after_put.bytes_sent - before.bytes_sent >= 1000
    assert backend.get("s/k") == b"x" * 1000
    after_get = backend.stats.snapshot()
    assert after_get.requests > after_put.requests
    assert after_get.bytes_received - after_put.bytes_received >= 1000
    backend.get_range("s/k", 0, 10)
    assert backend.stats.bytes_received - after_get.bytes_received >= 10
    assert backend.stats.bytes_received - after_get.bytes_received < 1000  # a ranged read reads the range


# -- a stateful model check ----------------------------------------------------------------

KEYS = st.sampled_from(["a", "b/c", "b/d", "bx", "e/f/g"])
VALUES = st.binary(max_size=64)


def _run_state_machine(make_backend, max_examples: int, steps: int) -> None:  # type: ignore[no-untyped-def]
    class BackendVsDict(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.backend = make_backend()
            self.model: dict[str, bytes] = {}

        @rule(key=KEYS, value=VALUES)
        def put(self, key: str, value: bytes) -> None:
            self.backend.put(key, value)
            self.model[key] = value

        @rule(key=KEYS, value=VALUES)
        def put_if_absent(self, key: str, value: bytes) -> None:
            created = self.backend.put_if_absent(key, value)
            assert created == (key not in self.model)
            self.model.setdefault(key, value)

        @rule(key=KEYS, value=VALUES, use_actual=st.booleans())
        def compare_and_swap(self, key: str, value: bytes, use_actual: bool) -> None:
            expected = self.model.get(key) if use_actual else b"never-stored"
            try:
                self.backend.compare_and_swap(key, expected, value)
            except Conflict as exc:
                assert not use_actual
                assert exc.actual == self.model.get(key)
            else:
                assert use_actual
                self.model[key] = value

        @rule(key=KEYS)
        def get(self, key: str) -> None:
            if key in self.model:
                assert self.backend.get(key) == self.model[key]
            else:
                with pytest.raises(NotFound):
                    self.backend.get(key)

        @rule(key=KEYS, start=st.integers(0, 70), length=st.integers(0, 70))
        def get_range(self, key: str, start: int, length: int) -> None:
            if key in self.model:
                assert self.backend.get_range(key, start, length) == self.model[key][start:start + length]

        @rule(key=KEYS)
        def delete(self, key: str) -> None:
            self.backend.delete(key)
            self.model.pop(key, None)

        @rule(prefix=st.sampled_from(["", "b", "b/", "e/f", "x"]))
        def iter_prefix(self, prefix: str) -> None:
            listed = {info.key: info.size for info in self.backend.iter_prefix(prefix)}
            assert listed == {k: len(v) for k, v in self.model.items() if k.startswith(prefix)}

        def teardown(self) -> None:
            self.backend.close()

    BackendVsDict.TestCase.settings = settings(
        max_examples=max_examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    BackendVsDict.TestCase().runTest()


def test_stateful_local_backend_matches_dict(tmp_path: Path) -> None:
    counter = iter(range(10**9))
    _run_state_machine(lambda: LocalBackend(tmp_path / f"s{next(counter)}"), max_examples=40, steps=30)


@pytest.mark.s3
def test_stateful_s3_backend_matches_dict(s3_bucket_url: str) -> None:
    _run_state_machine(lambda: open_backend(f"{s3_bucket_url}/{secrets.token_hex(4)}"), max_examples=5, steps=15)


# -- S3 error paths ------------------------------------------------------------------

def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.s3
def test_wrong_endpoint_is_a_retryable_one_line_error(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    backend = open_backend(s3_bucket_url)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.get("k")
    assert time.monotonic() - started < 10
    assert info.value.retryable
    message = str(info.value)
    assert "\n" not in message and endpoint in message and "endpoint" in message
    with pytest.raises(BackendError):
        backend.put_if_absent("k", b"x")
    assert backend.stats.requests >= 2  # retried


@pytest.mark.s3
def test_missing_bucket_is_named(s3_env: dict[str, str]) -> None:
    bucket = f"objstore-missing-{secrets.token_hex(4)}"
    backend = open_backend(f"s3://{bucket}/p")
    for call in (lambda: backend.get("k"), lambda: list(backend.iter_prefix("")), lambda: backend.stat("k")):
        with pytest.raises(BackendError) as info:
            call()
        assert not isinstance(info.value, NotFound)
        assert not info.value.retryable
        message = str(info.value)
        assert bucket in message and "create it or check the URL" in message and "\n" not in message


@pytest.mark.s3
def test_wrong_credentials_are_named(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(BackendError) as info:
        open_backend(s3_bucket_url).get("k")
    assert not info.value.retryable and "credentials" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(BackendError) as info:
        open_backend(s3_bucket_url).put("k", b"x")
    assert "credentials" in str(info.value)


@pytest.mark.s3
def test_missing_credentials_are_named(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # The metadata fallback goes to a closed loopback port, never a cloud address.
    assert os.environ["AWS_METADATA_ENDPOINT"] == "http://127.0.0.1:9"
    with pytest.raises(BackendError) as info:
        open_backend(s3_bucket_url).get("k")
    assert "AWS_ACCESS_KEY_ID" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.s3
def test_url_and_options_carry_no_secrets_into_repr(s3_bucket_url: str, s3_env: dict[str, str]) -> None:
    backend = open_backend(s3_bucket_url)
    assert backend.url == s3_bucket_url
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in repr(backend)
    # Options override the environment.
    backend2 = open_backend(s3_bucket_url, endpoint=s3_env["AWS_ENDPOINT_URL"], access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                            secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"], region="us-east-1")
    backend2.put("k", b"v")
    assert backend.get("k") == b"v"
