"""The errors objstore raises: one small hierarchy, each with fields a caller can use.

Every error a user can cause or meet derives from :class:`ObjstoreError`, and its
message says what is wrong and, where there is one, what to do about it. Where a
stdlib type fits, it is a second base, so ``except FileNotFoundError`` also
catches :class:`NotFound`.
"""

from __future__ import annotations

from typing import TypeVar


class ObjstoreError(Exception):
    """Base of every error objstore raises on purpose (W&B's ``wandb.errors.Error``).

    ``cli_message``: the message in the command line's words where the library's
    names a Python argument (``--delete-aliases`` for ``delete_aliases=True``); the
    CLI prints it instead (set with :func:`in_cli_words`)."""

    cli_message: str | None = None


Error = ObjstoreError  # W&B's name for the base

_E = TypeVar("_E", bound=ObjstoreError)


def in_cli_words(exc: _E, message: str) -> _E:
    """``exc``, with ``message`` as the CLI says it (see :attr:`ObjstoreError.cli_message`)."""
    exc.cli_message = message
    return exc


class CommError(ObjstoreError):
    """W&B's name for a failure to reach the store or to find something in it: W&B
    raises it for a missing artifact, collection or run (what the server answered),
    objstore for :class:`NotFound` and :class:`BackendError`, so
    ``except wandb.errors.CommError`` catches what it catches in a W&B script."""


class AuthenticationError(CommError):
    """W&B's: credentials refused. objstore raises :class:`BackendError` for a denied
    bucket instead; the name exists so a W&B script's ``except`` clause imports."""


class UsageError(ObjstoreError):
    """W&B's name for a call made wrongly (a bad argument, a call before ``init``):
    ``except wandb.errors.UsageError`` catches objstore's bad-input errors too."""


class UnsupportedError(UsageError, AttributeError):
    """W&B's name for a feature not offered here: an argument or attribute W&B has
    that objstore does not store (``Artifact.tags``, ``init(fork_from=…)``). It is
    raised rather than the value being dropped; an AttributeError too, as an
    assignment to an attribute a class does not have would be."""


class MissingArgument(UsageError, TypeError):
    """A call missing an argument it needs in this state, where W&B raises TypeError
    (``upsert_artifact`` of a run in no group, without ``distributed_id``)."""


class InvalidName(UsageError, ValueError):
    """A name, alias, selector or path that breaks objstore's naming rules."""


class InvalidInput(UsageError, ValueError):
    """An argument that is well-formed as a name but cannot be acted on."""


class NotSafetensors(InvalidInput):
    """A file opened as safetensors that is not one, or whose header contradicts
    itself (a tensor outside the file, a shape its byte range cannot hold);
    ``reason`` says which."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path} is not a usable safetensors file: {reason}" if path else reason)


class ArtifactStatusError(ObjstoreError, AttributeError):
    """W&B's: an artifact in the wrong state (draft or logged) for what was asked."""


class ArtifactNotLoggedError(ArtifactStatusError, InvalidInput):
    """W&B's: a call that needs a logged version, made on a draft (``get_entry``, ``files``…)."""


class WaitTimeoutError(ObjstoreError, TimeoutError):
    """W&B's: ``Artifact.wait(timeout)`` ran out. objstore logs synchronously, so a
    logged draft is never waited for; the name exists for ``except`` clauses."""


class TooFewItemsError(UsageError, ValueError):
    """W&B's: a query that needs at least one item got none."""


class TooManyItemsError(UsageError, ValueError):
    """W&B's: a query that needs one item got more."""


class ArtifactFinalizedError(ArtifactStatusError, InvalidInput):
    """W&B's: a change that a logged (finalized) version does not take, such as
    setting its description or metadata (immutable here, see ``Artifact.save``)."""


class FileChanged(InvalidInput):
    """A file changed while it was being read for logging: what was read may be a
    mix of two states, so none of it was kept (no version, no cache entry).
    ``path`` names the file when known; retry once nothing is writing it."""

    def __init__(self, path: str | None = None, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path if path is not None else 'a file'} changed while it was being logged{detail}; "
                         "nothing was stored from it: log it again once nothing is writing it")


class NotFound(CommError, FileNotFoundError):
    """An artifact, version, alias, object, ref, run or path that does not exist."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:  # FileNotFoundError would render errno fields
        return self.args[0] if self.args else "not found"


class Conflict(ObjstoreError):
    """A compare-and-swap lost: the ref held something other than what was expected.

    ``expected`` and ``actual`` are the raw values (``None`` for absent), so a
    caller can re-read and decide whether to retry.
    """

    def __init__(self, key: str, expected: bytes | None, actual: bytes | None, message: str | None = None) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(message or f"{key} changed concurrently (expected {_short(expected)}, found {_short(actual)}); re-read and retry")


class CorruptObject(ObjstoreError):
    """Stored bytes that do not hash to their id, or cannot be decoded.

    ``object_id`` names the damaged object, ``expected``/``actual`` the digests
    where a hash check failed, and ``breaks`` lists the versions known to depend
    on it (filled in by callers that know, such as fsck and materialize).
    """

    def __init__(
        self,
        message: str,
        *,
        object_id: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        breaks: tuple[str, ...] = (),
    ) -> None:
        self.object_id = object_id
        self.expected = expected
        self.actual = actual
        self.breaks = breaks
        super().__init__(message)

    def __str__(self) -> str:
        text = str(self.args[0])
        if self.breaks:
            text += "; breaks " + ", ".join(self.breaks)
        return text


class VerificationFailed(ObjstoreError):
    """A materialized copy differs from the version it came from."""

    def __init__(self, message: str, *, paths: tuple[str, ...] = ()) -> None:
        self.paths = paths
        super().__init__(message)


class UnsafePath(ObjstoreError, ValueError):
    """A tree entry that would write outside the destination directory."""


class DestinationError(ObjstoreError, OSError):
    """A destination directory that cannot be written: a file where the root goes, a
    full disk, no permission, a name longer than its file system allows. ``errno``
    is the operating system's, when there was one."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:  # OSError would render errno fields
        return self.args[0] if self.args else "destination error"


class WrongType(ObjstoreError, TypeError):
    """An artifact of a type the operation refuses (``use_model`` of a dataset)."""


class BackendError(CommError, OSError):
    """The storage under the store failed. ``retryable`` tells a transient failure
    (a timeout, a 5xx, S3's 409) from a permanent one (denied, missing bucket)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __str__(self) -> str:
        return self.args[0] if self.args else "backend error"


class LockTimeout(ObjstoreError, TimeoutError):
    """A lock stayed held by a live owner for longer than we were willing to wait."""


class NonFastForward(Conflict):
    """A push or ref move that would drop versions the other side has."""


class StoreBroken(ObjstoreError):
    """A writer that failed once refuses further use rather than write a broken pack."""


def _short(value: bytes | None) -> str:
    if value is None:
        return "nothing"
    text = value.decode("utf-8", "replace").strip()
    return text[:16] or "a deleted ref"


class VersionInUse(CommError, InvalidInput):
    """A version that cannot be deleted as asked: it still has aliases (W&B's server
    refuses that too, a ``CommError`` there) or a registered model links to it."""


def did_you_mean(word: str, candidates: object) -> str:
    """``"; did you mean X?"`` for the candidate closest to ``word`` (difflib), else ``""``:
    the tail every "no such name" message adds, so a typo names its fix."""
    import difflib

    names = sorted({str(c) for c in candidates} - {word})  # type: ignore[attr-defined]
    close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    if not close:
        close = [n for n in names if n.lower() == word.lower()]
    return f"; did you mean {' or '.join(close)}?" if close else ""
