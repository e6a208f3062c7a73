"""A store in object storage (S3 and S3-compatible servers, GCS, Azure) through ``obstore``.

How each guarantee of :mod:`objstore.storage.backend.base` is kept:

- ``put_if_absent``: a PUT with ``If-None-Match: *``. An "already exists"
  answer is not taken on trust, because it can be a retry meeting its own
  write: when an attempt landed but its answer was lost (a dropped
  connection, a timeout), the next attempt gets 412 for the key this writer
  just created. And S3 answers ``409 ConditionalRequestConflict`` for a
  create racing a delete, which obstore reports the same way, although
  nothing landed. So the key is read back (at most the size of our value):
  absent, the create is tried again within the attempt budget; holding
  exactly our bytes after an attempt of ours failed in transit, the create
  was ours (True); otherwise, including our bytes on a first-attempt answer,
  the key was there before (False). True can thus mean "the key holds exactly
  these bytes and nothing says they were there before this call": the same
  thing for every caller (see :mod:`objstore.storage.backend.base`).
- ``put_file_if_absent``: small files as above. A large file is streamed as a
  multipart upload to a staging key under ``tmp/``, then copied to its key with
  a multipart copy completed under ``If-None-Match: *`` (obstore's
  ``copy_if_not_exists="multipart"``), so memory stays bounded. That create is
  atomic only where the server applies ``If-None-Match`` with the completion's
  write, as S3 does; SeaweedFS checks it first and then writes, so two writers
  completing together may both be told they created the key. Hence large files
  go this way only for content-addressed keys (packs, chunk index files), whose
  writers all hold the same bytes; a key whose create must be exclusive (refs,
  config, claims, marks) goes through ``put_if_absent``, one conditional PUT.
  The staging key is deleted afterwards; one left by a crash is garbage that
  ``gc`` may remove. An "already exists" from the copy is checked as above,
  by size only (a HEAD): the key is content-addressed, so a value of that
  size under that name is that value.
- ``compare_and_swap``: GET the value and its ETag, compare the bytes, then PUT
  with ``If-Match: <etag>`` (``If-None-Match: *`` when ``expected`` is None). A
  412 is an answer, not a failure: the value is re-read and a
  :class:`~objstore.errors.Conflict` carries it.
- ``iter_prefix``: object stores list by path segment, the contract by string
  prefix, so the parent "directory" is listed starting after the prefix and
  filtered.

Transport failures (connection refused, timeouts, 5xx, 429, S3's 409) are
retried a bounded number of times with jittered exponential backoff here, and
obstore's own retries are off, so every request is counted once in
:attr:`ObjectStoreBackend.stats`. A retry of a conditional PUT whose first
attempt did land sees its own write as "already there": put-if-absent and a
CAS both read the key back and, finding their own bytes, are done.

Credentials, endpoint and region come from options or the usual AWS variables;
they are never written into the store.
"""

from __future__ import annotations

import functools
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from objstore.constants import MAX_VALUE_BYTES, MiB
from objstore.errors import BackendError, Conflict, CorruptObject, InvalidInput, InvalidName, NotFound, ObjstoreError
from objstore.storage.backend.base import CAS_READ_MIN, BackendStats, KeyInfo, too_large
from objstore.storage.keys import TMP

T = TypeVar("T")

# A file up to this size goes up as one conditional PUT (If-None-Match: *), read
# into memory: every pack (PACK_TARGET, 32 MiB) fits, so a pack costs one request
# and is created atomically. A larger file goes up as a multipart upload to a
# staging key and is then copied create-only into place, which moves its bytes
# twice on the server (measured on SeaweedFS: a 32 MiB pack at ~20 MB/s that
# way against ~30 MB/s as one PUT). 8 MiB parts: well above S3's 5 MiB minimum,
# at most PART_CONCURRENCY parts in memory.
MULTIPART_THRESHOLD = 64 * MiB
PART_SIZE = 8 * MiB
PART_CONCURRENCY = 4

# Transient failures: 5 attempts with 50 ms .. 2 s backoff is under ~2 s for a
# dead endpoint and rides out a server restart or a burst of 503 SlowDown.
MAX_ATTEMPTS = 5
BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 2.0

# A CAS whose If-Match failed but whose re-read shows the expected bytes again
# (rewritten with a new ETag) tries again, at most this many times.
CAS_REREAD_ATTEMPTS = 5

CONNECT_TIMEOUT = "5s"
REQUEST_TIMEOUT = "120s"  # per request; a PART_SIZE part on a slow link fits

STAGING_PREFIX = TMP
# Keys per listing request: S3's maximum (and SeaweedFS's).
LIST_PAGE = 1000

_STATUS = re.compile(r"status code: (\d{3})")
_S3_CODE = re.compile(r"<Code>([^<]+)</Code>")
_CONNECT_HINTS = ("error sending request", "connection refused", "connection reset", "timed out",
                  "timeout", "dns error", "broken pipe", "connection closed", "incomplete message")


# At most this many ETags of values just written are kept (see ObstoreBackend._written).
WRITTEN_MEMO = 1024


class ObjectStoreBackend:
    """Blob I/O on an object store bucket (and optional prefix). Safe for many machines."""

    def __init__(
        self,
        store: Any,
        url: str,
        *,
        endpoint: str | None = None,
        bucket: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        sorted_listing: bool = True,
    ) -> None:
        self._store = store
        self.url = url
        self.endpoint = endpoint or url
        self.bucket = bucket
        self.max_attempts = max(1, max_attempts)
        self.stats = BackendStats()
        # S3, GCS and Azure list keys in byte order, which lets iter_prefix stop early.
        self._sorted_listing = sorted_listing
        self._closed = False
        self._bucket_checked = False
        # key -> (ETag, bytes) of a small value this process just wrote: a compare-and-swap
        # expecting exactly those bytes sends its conditional PUT against that ETag without
        # reading the key first (a run ref created at use_model and moved at finish: one
        # request less). A stale ETag costs nothing wrong: the server refuses the PUT
        # (412), and the key is read as without the memo.
        self._written: dict[str, tuple[str, bytes]] = {}

    # -- construction ----------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **options: Any) -> ObjectStoreBackend:
        """Open ``s3://bucket/prefix`` (or ``gs://``, ``az://`` … through obstore's ``from_url``).

        For S3 the endpoint, credentials and region come from ``options``
        (``endpoint``, ``access_key_id``, ``secret_access_key``, ``session_token``,
        ``region``, ``allow_http``) or else from ``AWS_ENDPOINT_URL_S3`` /
        ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
        ``AWS_ALLOW_HTTP``. ``max_attempts``, ``timeout`` and ``connect_timeout``
        tune retries and the HTTP client; anything else is passed to obstore.
        """
        opts = dict(options)
        max_attempts = int(opts.pop("max_attempts", MAX_ATTEMPTS))
        client_options: dict[str, Any] = {
            "connect_timeout": opts.pop("connect_timeout", CONNECT_TIMEOUT),
            "timeout": opts.pop("timeout", REQUEST_TIMEOUT),
        }
        # Our own retry loop counts and classifies every attempt; obstore's is off.
        retry_config: Any = {"max_retries": 0, "retry_timeout": timedelta(seconds=600)}
        parsed = urlparse(url)
        scheme = parsed.scheme.lower()
        if scheme in ("s3", "s3a"):
            store, shown_endpoint = _open_s3(url, parsed.netloc, parsed.path, opts, client_options, retry_config)
            return cls(store, url, endpoint=shown_endpoint, bucket=parsed.netloc, max_attempts=max_attempts)
        from obstore.store import from_url as store_from_url

        if "allow_http" in opts:
            client_options["allow_http"] = _truthy(opts.pop("allow_http"))
        # opts are the URL's query options, a dict[str, Any] no overload of the
        # typed from_url can match; obstore checks them at run time.
        store = store_from_url(url, client_options=client_options,  # type: ignore[call-overload]
                               retry_config=retry_config, **opts)
        return cls(store, url, endpoint=url, bucket=parsed.netloc or None, max_attempts=max_attempts,
                   sorted_listing=scheme != "memory")

    # -- the retry loop and error mapping -----------------------------------
    def _call(self, op: str, key: str, fn: Callable[[], T], *, counted: bool = True) -> T:
        """Run one request, retrying transient failures; translate obstore errors.
        ``counted=False`` for a call that may make no request (a listing's next
        page after the last); the caller counts it if it does."""
        if self._closed:
            raise BackendError(f"{self.url} was closed", retryable=False)
        delay = BACKOFF_INITIAL
        for attempt in range(1, self.max_attempts + 1):
            if counted or attempt > 1:
                self.stats.add(requests=1)
            try:
                return fn()
            except (AlreadyExistsError, PreconditionError, ObjstoreError):
                raise  # answers, handled by the caller
            except (BaseError, OSError) as exc:  # obstore raises FileNotFoundError for 404s
                if isinstance(exc, ObjstoreError):
                    raise
                error = self._translate(exc, op, key)
                if not (isinstance(error, BackendError) and error.retryable) or attempt == self.max_attempts:
                    if isinstance(error, BackendError) and error.retryable:
                        error = BackendError(f"{error} (gave up after {attempt} attempts)", retryable=True)
                    raise error from exc
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX)
        raise AssertionError("unreachable")

    def _translate(self, exc: BaseException, op: str, key: str) -> ObjstoreError:
        text = str(exc)
        first = text.split("\n\nDebug source")[0]
        status_match = _STATUS.search(first)
        status = int(status_match.group(1)) if status_match else None
        code_match = _S3_CODE.search(first)
        code = code_match.group(1) if code_match else ""
        where = f"{self.url.rstrip('/')}/{key}" if key else self.url
        lowered = first.lower()
        if code == "NoSuchBucket" or (status == 404 and "bucket" in code.lower()):
            return BackendError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it or check the URL {self.url}",
                retryable=False,
            )
        if isinstance(exc, (NotFoundError, FileNotFoundError)) or status == 404:
            return NotFound(f"{key} is not in the store at {self.url}", key=key)
        if "/latest/api/token" in first or "/latest/meta-data" in first or "credential" in lowered and status is None:
            return BackendError(
                f"no credentials for {self.endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                f"(or AWS_PROFILE naming a profile in ~/.aws/credentials, or pass access_key_id / secret_access_key)",
                retryable=False,
            )
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or status in (401, 403):
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                        "AuthorizationHeaderMalformed") or isinstance(exc, UnauthenticatedError):
                why = f"rejected the credentials ({code or 'unauthenticated'})"
                hint = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"
            else:
                why = f"denied {op} of {where} ({code or status or 'forbidden'})"
                hint = "check that the credentials may read and write this bucket"
            return BackendError(f"{self.endpoint} {why}; {hint}", retryable=False)
        if status is not None:
            retryable = status >= 500 or status in (408, 409, 429)
            detail = code or first.rsplit(":", 1)[-1].strip()[:80]
            return BackendError(f"{op} {where} failed: HTTP {status} {detail}", retryable=retryable)
        if any(hint in lowered for hint in _CONNECT_HINTS):
            return BackendError(
                f"cannot reach the object store at {self.endpoint} ({op} {key or '/'}): "
                f"connection refused or timed out; check the endpoint (AWS_ENDPOINT_URL) and that the server is up",
                retryable=True,
            )
        return BackendError(f"{op} {where} failed: {first.splitlines()[0][:200]}", retryable=False)

    # -- reads -----------------------------------------------------------
    def get(self, key: str, max_size: int = MAX_VALUE_BYTES) -> bytes:
        _check_key(key)

        def attempt() -> bytes:
            return self._body(key, obstore.get(self._store, key), max_size)

        data = self._call("get", key, attempt)
        self.stats.add(received=len(data))
        return data

    def _body(self, key: str, result: Any, max_size: int) -> bytes:
        """The body of a GET, refused from its Content-Length (before a byte of it is
        read) if it is over ``max_size``, and checked again after."""
        size = int(result.meta["size"])
        if size > max_size:
            raise too_large(key, self.url, size, max_size)
        data = bytes(result.bytes())
        if len(data) > max_size:
            raise too_large(key, self.url, len(data), max_size)
        return data

    def _get_with_etag(self, key: str, max_size: int) -> tuple[bytes, str | None] | None:
        def attempt() -> tuple[bytes, str | None]:
            result = obstore.get(self._store, key)
            etag = result.meta.get("e_tag")
            return self._body(key, result, max_size), etag

        try:
            data, etag = self._call("get", key, attempt)
        except NotFound:
            return None
        self.stats.add(received=len(data))
        return data, etag

    def get_range(self, key: str, start: int, length: int) -> bytes:
        _check_key(key)
        if start < 0 or length < 0:
            raise ValueError(f"bad range start={start} length={length}")
        if length == 0:
            self.stat(key)  # NotFound for a missing key, like every other read
            return b""

        def attempt() -> bytes:
            try:
                return bytes(obstore.get_range(self._store, key, start=start, length=length))
            except (BaseError, OSError) as exc:
                status = _STATUS.search(str(exc))
                if status and status.group(1) == "416":
                    return b""  # the range starts at or past the end of the value
                raise

        data = self._call("get_range", key, attempt)
        self.stats.add(received=len(data))
        return data

    def stat(self, key: str) -> KeyInfo:
        _check_key(key)
        try:
            meta = self._call("stat", key, lambda: obstore.head(self._store, key))
        except NotFound:
            # A HEAD 404 has no body, so it cannot say "no such bucket"; ask once.
            self._check_bucket()
            raise
        return KeyInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    def _check_bucket(self) -> None:
        if self._bucket_checked:
            return
        self._call("list", "", lambda: obstore.list_with_delimiter(self._store, None))
        self._bucket_checked = True

    def head(self, key: str) -> tuple[KeyInfo, str | None]:
        """Like :meth:`stat`, plus the object's ETag (reference artifacts record it)."""
        _check_key(key)
        meta = self._call("stat", key, lambda: obstore.head(self._store, key))
        return KeyInfo(key, int(meta["size"]), meta["last_modified"].timestamp()), meta.get("e_tag")

    def iter_prefix(self, prefix: str) -> Iterator[KeyInfo]:
        # Object stores list by path segment ("refs/a" lists "refs/a/…" only);
        # the contract is a string prefix. So list the parent segment and filter.
        # Unless the prefix ends in "/", start after prefix[:-1]: every key with
        # the prefix sorts after it, and no key with the prefix lies in the
        # subtree "prefix[:-1]/" that SeaweedFS's start-after also skips.
        # The matching keys form one run both in S3's byte order and in the
        # directory-walk order SeaweedFS lists in, so we stop when the run ends.
        directory, _, _ = prefix.rpartition("/")
        offset = prefix[:-1] if len(prefix) > 1 and not prefix.endswith("/") else None
        skip_staging = not prefix.startswith(STAGING_PREFIX)

        def open_stream() -> Any:
            kwargs: dict[str, Any] = {"chunk_size": LIST_PAGE}
            if offset:
                kwargs["offset"] = offset
            return iter(obstore.list(self._store, directory or None, **kwargs))

        # Counted as the server sees it: one request per page. Opening the stream
        # sends nothing; asking past a short page (the server said it was the
        # last) sends nothing either.
        stream = self._call("list", prefix, open_stream, counted=False)
        in_run = False
        last = LIST_PAGE  # size of the previous batch; a full one may have a next page
        while True:
            try:
                batch = self._call("list", prefix, lambda: next(stream, None), counted=last >= LIST_PAGE)
            except NotFound:
                return
            if batch is None:
                return
            if last < LIST_PAGE:
                self.stats.add(requests=1)  # a short batch that is not the last came from a new page
            last = len(batch)
            for meta in batch:
                key = meta["path"]
                if not key.startswith(prefix):
                    if in_run and self._sorted_listing:
                        return
                    continue
                in_run = True
                if skip_staging and key.startswith(STAGING_PREFIX):
                    continue
                yield KeyInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    # -- writes ----------------------------------------------------------
    def put(self, key: str, data: bytes | memoryview) -> None:
        _check_key(key)
        payload = bytes(data) if isinstance(data, memoryview) else data
        self._written.pop(key, None)
        self._call("put", key, lambda: obstore.put(self._store, key, payload, use_multipart=False))
        self.stats.add(sent=len(payload))

    def put_if_absent(self, key: str, data: bytes | memoryview) -> bool:
        _check_key(key)
        payload = bytes(data) if isinstance(data, memoryview) else data

        def create(calls: list[int]) -> None:
            calls.append(1)
            result = obstore.put(self._store, key, payload, mode="create")
            if len(calls) == 1:  # answered first time: that ETag is of these bytes
                self._remember(key, result.get("e_tag"), payload)

        if not self._create("put_if_absent", key, create, lambda: self._holds(key, payload)):
            return False
        self.stats.add(sent=len(payload))
        return True

    def _remember(self, key: str, etag: str | None, payload: bytes) -> None:
        """Keep the ETag of a small value just written (see ``_written``), a bounded few."""
        if etag and len(payload) <= CAS_READ_MIN:
            if len(self._written) >= WRITTEN_MEMO:
                self._written.clear()
            self._written[key] = (etag, payload)

    def _create(self, op: str, key: str, create: Callable[[list[int]], None], holds: Callable[[], bool | None]) -> bool:
        """Run a create-only request until the server answers; True if this call created ``key``.

        An "already exists" answer (412, or the 409 obstore maps the same way) is
        checked against the key: absent means nothing landed (S3's 409
        ConditionalRequestConflict for a create racing a delete), so try again,
        within the same attempt budget; holding these bytes after an attempt of
        ours failed in transit (``holds``) means that attempt landed and its
        answer was lost, so it is ours; anything else, or any value on an
        answer to a first attempt, means the key was there before. A 412 to a
        first attempt says so itself and costs no read.
        """
        delay = BACKOFF_INITIAL
        in_transit = False
        for _ in range(self.max_attempts):
            calls: list[int] = []
            try:
                self._call(op, key, functools.partial(create, calls))
                return True
            except (AlreadyExistsError, PreconditionError) as exc:
                in_transit = in_transit or len(calls) > 1
                status = _STATUS.search(str(exc))
                if not in_transit and status is not None and status.group(1) == "412":
                    return False  # the answer to our only attempt: it was there
            # Only a lost answer needs the bytes; otherwise a HEAD tells absent
            # from present without reading back a pack that is already there.
            held = holds() if in_transit else self._holds_size(key, None)
            if held is not None:
                return held and in_transit
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX)
        raise BackendError(f"{op} {self.url.rstrip('/')}/{key}: the server kept answering "
                           f"\"already exists\" for an absent key (gave up after {self.max_attempts} tries)",
                           retryable=True)

    def _holds(self, key: str, payload: bytes) -> bool | None:
        """Whether ``key`` holds exactly ``payload``; None if it is absent. Reads at most its size."""
        try:
            return self.get(key, max_size=len(payload)) == payload
        except NotFound:
            return None
        except CorruptObject:
            return False  # longer than ours, so not ours

    def _holds_size(self, key: str, size: int | None) -> bool | None:
        """Whether ``key`` holds ``size`` bytes (any, for None); None if it is absent. For
        content-addressed keys only, where a value of the right size under the name is that value."""
        try:
            actual = self.stat(key).size
        except NotFound:
            return None
        return size is None or actual == size

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        _check_key(key)
        src = Path(path)
        try:
            size = src.stat().st_size
        except OSError as exc:
            raise BackendError(f"cannot read {src}: {exc.strerror or exc}", retryable=False) from exc
        if size <= MULTIPART_THRESHOLD:
            return self.put_if_absent(key, src.read_bytes())
        # Cheap early exit: immutable keys are often already there.
        try:
            self.stat(key)
            return False
        except NotFound:
            pass
        staging = f"{STAGING_PREFIX}upload-{os.getpid()}-{secrets.token_hex(8)}"
        parts = -(-size // PART_SIZE)
        try:
            def upload() -> None:
                obstore.put(self._store, staging, src, use_multipart=True, chunk_size=PART_SIZE,
                            max_concurrency=PART_CONCURRENCY)

            self._call("put_file_if_absent", key, upload)
            self.stats.add(requests=parts + 1, sent=size)  # create + parts + complete

            def copy(calls: list[int]) -> None:
                calls.append(1)
                obstore.copy(self._store, staging, key, overwrite=False)
                self.stats.add(requests=2)  # a multipart copy is create + part copy + complete

            return self._create("put_file_if_absent", key, copy, lambda: self._holds_size(key, size))
        finally:
            try:
                self.delete(staging)
            except BackendError:
                pass  # garbage under tmp/, for gc

    def compare_and_swap(self, key: str, expected: bytes | None, data: bytes) -> None:
        _check_key(key)
        payload = bytes(data)
        bound = max(len(expected or b""), len(payload), CAS_READ_MIN)  # anything longer is not expected
        memo = self._written.pop(key, None)
        for _ in range(CAS_REREAD_ATTEMPTS):
            # Once: what this process wrote last, if that is what the caller expects.
            current = (memo[1], memo[0]) if memo is not None and memo[1] == expected else self._get_with_etag(key, bound)
            memo = None
            actual = None if current is None else current[0]
            if actual != expected:
                raise Conflict(key, expected, actual)
            mode: Any = "create" if current is None else {"e_tag": current[1]}
            calls = 0

            def attempt(mode: Any = mode) -> Any:  # bound now; called only in this iteration anyway
                nonlocal calls
                calls += 1
                return obstore.put(self._store, key, payload, mode=mode)

            try:
                result = self._call("compare_and_swap", key, attempt)
                if calls == 1:
                    self._remember(key, result.get("e_tag"), payload)
            except (AlreadyExistsError, PreconditionError):
                after = self._get_with_etag(key, bound)
                now = None if after is None else after[0]
                if now == expected:
                    continue  # rewritten with the same bytes (new ETag): compare again
                if calls > 1 and now == payload:
                    return  # an earlier attempt that failed in transit had landed
                raise Conflict(key, expected, now) from None
            self.stats.add(sent=len(payload))
            return
        current = self._get_with_etag(key, bound)
        raise Conflict(key, expected, None if current is None else current[0])

    def delete(self, key: str) -> None:
        _check_key(key)
        self._written.pop(key, None)
        try:
            self._call("delete", key, lambda: obstore.delete(self._store, key))
        except NotFound:
            pass

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"ObjectStoreBackend({self.url!r})"


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
        raise InvalidName(f"{key!r} is not a valid storage key")


def _open_s3(url: str, bucket: str, path: str, opts: dict[str, Any], client_options: dict[str, Any],
             retry_config: Any) -> tuple[Any, str]:
    """An obstore ``S3Store`` for ``s3://<bucket><path>`` and the endpoint to show for it."""
    if not bucket:
        raise InvalidName(f"{url!r} names no bucket; use s3://<bucket>/<prefix>")
    prefix = path.strip("/")
    config, endpoint, region = _s3_config(opts, client_options)
    from obstore.store import S3Store

    # config and client_options are plain dicts built from the environment and the
    # URL's options, not obstore's TypedDicts; obstore checks them at run time.
    store = S3Store(bucket, prefix=prefix or None, config=config,  # type: ignore[arg-type]
                    client_options=client_options, retry_config=retry_config)  # type: ignore[arg-type]
    return store, endpoint or f"s3 ({region})"


@dataclass(frozen=True)
class AwsProfile:
    """What a shared-credentials profile gives: keys (obstore's names) and a region."""

    name: str | None
    keys: dict[str, str]
    region: str | None


def aws_profile(*, need_keys: bool = True) -> AwsProfile:
    """The AWS profile ``$AWS_PROFILE`` names (else ``$AWS_DEFAULT_PROFILE``, else
    ``default``), read from ``$AWS_SHARED_CREDENTIALS_FILE`` (``~/.aws/credentials``)
    and ``$AWS_CONFIG_FILE`` (``~/.aws/config``), as the AWS CLI reads them.

    obstore reads keys from the environment and the instance metadata only, so the
    files are read here; only static keys (``aws_access_key_id``,
    ``aws_secret_access_key``, ``aws_session_token``) and ``region`` are taken, not
    ``credential_process`` or SSO. A profile named by ``$AWS_PROFILE`` that neither
    file has is refused (a typo would otherwise go on as no credentials at all)."""
    import configparser

    env = os.environ
    named = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
    name = named or "default"
    found = False
    keys: dict[str, str] = {}
    region: str | None = None
    for path, section in ((env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", name),
                          (env.get("AWS_CONFIG_FILE") or "~/.aws/config", name if name == "default" else f"profile {name}")):
        parser = configparser.RawConfigParser()
        try:
            parser.read(os.path.expanduser(path), encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise InvalidInput(f"AWS file {path} cannot be parsed: {exc}") from None
        if not parser.has_section(section):
            continue
        found = True
        values = dict(parser.items(section))
        for key in ("access_key_id", "secret_access_key", "session_token"):
            if need_keys and values.get(f"aws_{key}") and key not in keys:
                keys[key] = values[f"aws_{key}"]
        region = region or values.get("region") or None
    if named and not found:
        raise InvalidInput(f"AWS_PROFILE={named!r}: no such profile in ~/.aws/credentials or ~/.aws/config "
                           f"(or $AWS_SHARED_CREDENTIALS_FILE / $AWS_CONFIG_FILE)")
    return AwsProfile(name if found else None, keys, region)


def _s3_config(opts: dict[str, Any], client_options: dict[str, Any]) -> tuple[dict[str, Any], str | None, str]:
    """(obstore S3 config, endpoint, region) from ``opts``, else the AWS variables;
    sets ``client_options["allow_http"]``. Options left in ``opts`` go to obstore as they are."""
    env = os.environ
    endpoint = (opts.pop("endpoint", None) or env.get("AWS_ENDPOINT_URL_S3")
                or env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT"))
    config: dict[str, Any] = {
        "conditional_put": "etag",
        "copy_if_not_exists": "multipart",
    }
    for key, var in (("access_key_id", "AWS_ACCESS_KEY_ID"),
                     ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                     ("session_token", "AWS_SESSION_TOKEN")):
        value = opts.pop(key, None) or env.get(var)
        if value:
            config[key] = value
    profile = aws_profile(need_keys="access_key_id" not in config)
    if "access_key_id" not in config:
        config.update(profile.keys)
    region = (opts.pop("region", None) or env.get("AWS_REGION")
              or env.get("AWS_DEFAULT_REGION") or profile.region or "us-east-1")
    config["region"] = region
    allow_http = opts.pop("allow_http", None)
    if allow_http is None:
        allow_http = _truthy(env.get("AWS_ALLOW_HTTP")) or bool(endpoint and endpoint.startswith("http://"))
    client_options["allow_http"] = _truthy(allow_http)
    if endpoint:
        config["endpoint"] = endpoint
        # S3-compatible servers (SeaweedFS, MinIO) want path-style requests.
        config.setdefault("virtual_hosted_style_request", False)
    config.update(opts)
    return config, endpoint, region
