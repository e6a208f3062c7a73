"""Tunables, with their units and the reason for each value, in one place.

Chunking parameters are copied into a store's config when it is created and
read from there afterwards: changing them here never changes an existing store.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# FastCDC (gear hash, normalized chunking), the default for new stores (a store
# keeps the parameters it was made with). 128 KiB average, not DESIGN's 64 KiB,
# because cuts are aligned to tensors: on the benchmark's six-version sequence
# 128 KiB stores 0.3% less (1641.9 vs 1646.6 MB; bf16 base 0.6582x vs 0.6598x)
# with half the chunks per GiB (7.6k vs 15.1k), and every per-chunk cost (index
# entries, calls, records) halves: cold ingest took 0.85x the CPU time. A sparse
# edit inside a tensor re-stores up to twice as many bytes; the benchmark's
# variants have none. min/max at 1/4 and 4x keep the size distribution tight.
CHUNK_AVG = 128 * KiB
CHUNK_MIN = 32 * KiB
CHUNK_MAX = 512 * KiB
CHUNK_NORMALIZATION = 1

# How much of a file the chunker reads at once: large enough that per-read
# overhead vanishes, small enough that memory stays bounded whatever the file size.
READ_BLOCK = 8 * MiB

# A pack is closed once it holds this many stored bytes. Tens of MiB: few
# objects on S3 (cheap listing, efficient transfers), bounded memory per pack.
PACK_TARGET = 32 * MiB

# zstd level for chunks and metadata. Level 1 is within a few percent of level 3
# on model weights at twice the speed.
ZSTD_LEVEL = 1
# A compressed chunk is kept only if it saves at least this fraction; otherwise
# it is stored raw, so reads of incompressible data cost no decompression.
MIN_SAVING = 0.02

# Once a store has this many pack indexes (.idx) not covered by a consolidated
# index file, the next writer merges them into one (objstore.storage.chunkindex):
# opening a store then reads at most this many .idx files plus O(log packs)
# consolidated ones. Each .idx is a request of its own for every command on a
# bucket, so this bounds what history adds to a command's cost (issue 13: at most
# 1.5x + 10 requests from 10 to 3,000 packs, which 64 breaks: up to 63 extra
# GETs per command); at 16 a compaction runs about once per 16 sessions and costs
# that session about as many requests as the .idx files it merges.
# OBJSTORE_INDEX_COMPACT_THRESHOLD overrides it (0: never).
INDEX_COMPACT_THRESHOLD = 16

# gc deletes nothing younger than this: a writer that stored chunks but has not
# yet written its version must not lose them.
GC_GRACE_SECONDS = 3600.0
# A gc's intent to delete (objstore.model.gcintent): a writer that relied on bytes
# already stored waits at most this long after the intent's start for that gc to
# finish (an older running intent is a dead gc's); a finished intent is kept this
# long again, so a writer whose window held that gc's whole run still sees it; and
# times are compared with this margin for clocks that differ between machines.
GC_INTENT_STALE_SECONDS = 600.0
GC_INTENT_KEEP_SECONDS = 3600.0
GC_INTENT_CLOCK_MARGIN = 300.0
# gc rewrites a pack (copying its live chunks to a new pack) once at least this
# fraction of its stored bytes is garbage; below it, the copy costs more than
# the space it frees.
GC_REWRITE_GARBAGE_FRACTION = 0.5

# A lock whose owner is on this host and no longer running is broken at once;
# one whose owner we cannot check (another host) is broken after this long.
LOCK_STALE_SECONDS = 600.0
LOCK_WAIT_SECONDS = 30.0

# Upper bound on a metadata object's decoded size: msgpack from a store or a
# remote is untrusted and must not be able to exhaust memory.
MAX_METADATA_BYTES = 256 * MiB
# Upper bound on one string inside a metadata object (the decoder refuses longer
# ones, so the encoder refuses to write them).
MAX_OBJECT_STR_BYTES = 16 * MiB

# User metadata and run config: at most this many bytes once encoded, and this many
# levels of nested lists and dicts. Every version or run read (``objstore log``
# lists them all) decodes it, so it stays small; 16 MiB and 100 levels are far
# beyond any real config (a Hugging Face config.json is a few KiB, 4 levels) and
# well inside what the decoder accepts (a string of 16 MiB, msgpack's 1024-level
# stack, Python's recursion limit).
MAX_USER_VALUE_BYTES = 16 * MiB
MAX_USER_VALUE_DEPTH = 100

# How deep a logged directory may nest: a tree object at most this many levels
# below the root tree. Reading (walk, fsck, gc) refuses deeper trees as hostile,
# so logging refuses them too (a file may sit at most MAX_TREE_DEPTH + 1 path
# components deep, an empty directory MAX_TREE_DEPTH).
MAX_TREE_DEPTH = 256

# -- read bounds: the most bytes each kind of stored value can legitimately hold --
# Every read of a store's bytes (a store or a remote is untrusted) is bounded by
# one of these, so a forged size, a huge file or an endless one (a link to
# /dev/zero) is refused as damage instead of exhausting memory.

# A stored metadata object: a zstd frame of at most MAX_METADATA_BYTES, and zstd
# grows incompressible input by at most size/256 plus a few hundred bytes.
MAX_STORED_METADATA_BYTES = MAX_METADATA_BYTES + MAX_METADATA_BYTES // 128 + 64 * KiB
# A chunk, in any store: FastCDC (pyfastcdc) refuses a max_size over 16 MiB, and
# a cut rounded up to an element boundary adds at most 7 bytes. Not the store's
# own max: a pull from a store that chunks differently keeps that store's chunks.
MAX_CHUNK_BYTES = 16 * MiB + 8
# What a chunk's stored payload can take (no codec grows a chunk past this).
MAX_STORED_CHUNK_BYTES = MAX_CHUNK_BYTES + MAX_CHUNK_BYTES // 128 + 64 * KiB
# A pack: every writer closes one at PACK_TARGET, so with its last chunk and an
# index of tiny chunks it stays near 110 MiB; room for a larger PACK_TARGET later.
MAX_PACK_BYTES = 256 * MiB
# A ref holds a hex id and a newline (65 bytes); a reflog entry a few short strings
# (the reflog reader caps each at 4 KiB); a store's or remote's config a small map.
MAX_REF_BYTES = 4 * KiB
MAX_REFLOG_ENTRY_BYTES = 64 * KiB
MAX_CONFIG_BYTES = 64 * KiB
# A version's annotation state (objstore.model.annotations): its edited metadata and
# description (each at most MAX_USER_VALUE_BYTES) and tags, and its last edit, which
# names the old and new value of each field it changed: six such values at most.
MAX_ANNOTATION_BYTES = 6 * MAX_USER_VALUE_BYTES + MiB
# Anything else read whole (nothing objstore stores is larger than a pack).
MAX_VALUE_BYTES = MAX_PACK_BYTES

# The store format new stores are created at (a store's config records its own).
# 1: packs, each with its .idx. 2: may also hold consolidated index files
# (packs/<checksum>.midx) that replace the .idx of the packs they cover — a
# reader knowing only format 1 would miss those packs' chunks, so it must refuse
# the store (its config check does: a newer format asks for an upgrade). Format 1
# stores stay format 1 (no .midx written) until upgraded explicitly. 3: its
# lineage index (lineage/used|logged/<version>/<run>) is trusted once
# lineage/complete says it is whole. A release before the index writes runs
# without index keys, so used-by would miss them: it must refuse the store, as
# git refuses a repository whose format or extensions it does not know. On a
# format-2 store the index is kept up but never trusted (every run is read).
STORE_FORMAT = 3
INDEX_FILES_FORMAT = 2  # the first format that may hold consolidated index files
LINEAGE_INDEX_FORMAT = 3  # the first format whose lineage index is trusted

# The directory name a store has when found by the working directory (``objstore init``,
# the search upward) and that a directory log never takes (files/ignore.py).
STORE_DIRNAME = ".objstore"

# A case-folded name claim (objstore.model.nameclaims) whose spelling has nothing
# under it after this long is taken to be left by a writer that failed between its
# claim and its first ref, and may be taken over. Far above the claim-to-ref window
# (objects are stored before the claim; only the ref writes follow it).
NAME_CLAIM_STALE_SECONDS = 600.0
