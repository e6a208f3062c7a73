"""Turning local files into stored chunks and file objects, and directories into trees.

A file is segmented (:mod:`objstore.segmenting`), each segment chunked
(:mod:`objstore.chunking`), each chunk hashed and, if the store lacks it,
encoded and appended to the open pack. Memory stays bounded by the read block
and one pack's index, whatever the file size.

Callers must :meth:`~objstore.odb.ObjectDatabase.flush` before storing the file
objects returned here (the write order in :mod:`objstore.odb`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .chunking import Chunker
from .errors import InvalidInput, NotFound
from .ids import Kind, ObjectId, hash_bytes
from .objects import FileObject
from .odb import ObjectDatabase
from .segmenting import segment_file

Progress = Callable[[int], None]


def chunk_file(path: Path, chunker: Chunker, odb: ObjectDatabase | None, progress: Progress | None = None) -> FileObject:
    """Chunk and hash ``path``; store its new chunks in ``odb`` (if given).

    With ``odb=None`` nothing is stored: the result is just the file's identity,
    used to tell whether a materialized copy is intact.
    """
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist; check the path", key=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory; use add_dir or pass the directory as path") from None
    except PermissionError:
        raise InvalidInput(f"{path} is not readable (permission denied)") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        chunks: list[tuple[ObjectId, int]] = []
        for segment in segment_file(f, size):
            f.seek(segment.offset)
            for view in chunker.iter_chunks(f, segment.length, segment.align):
                chunk_id = hash_bytes(Kind.CHUNK, view)
                chunks.append((chunk_id, len(view)))
                if odb is not None:
                    odb.add_chunk(chunk_id, view, segment.dtype)
                if progress is not None:
                    progress(len(view))
    return FileObject(size, tuple(chunks))


def file_id_of(path: Path, chunker: Chunker) -> ObjectId:
    """The id ``path`` would have if logged, without storing anything."""
    return chunk_file(path, chunker, None).compute_id()
