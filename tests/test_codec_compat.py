"""Chunks written before the rotated codecs existed still decode: payloads of codec
ids 1-3 recorded with objstore's codecs.py as of 24b944b (before issue 12), in
``tests/golden/codec_main_v1.json``, decode to their bytes on the native and the
fallback path alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import blake3

from objstore.storage import codecs

GOLDEN = Path(__file__).parent / "golden" / "codec_main_v1.json"


def test_payloads_written_before_issue_12_decode_to_their_bytes() -> None:
    recorded = json.loads(GOLDEN.read_text())
    assert {case["codec"] for case in recorded.values()} == {codecs.ZSTD, codecs.BYTEGROUP2, codecs.BYTEGROUP4}
    for name, case in recorded.items():
        raw = codecs.decode_chunk(case["codec"], bytes.fromhex(case["payload"]), case["raw_len"])
        assert blake3.blake3(raw).hexdigest() == case["raw_blake3"], name


def test_the_old_payloads_decode_on_the_forced_fallback_too() -> None:
    script = (
        "import json, sys, blake3\n"
        "from objstore.storage import codecs\n"
        "assert codecs.PLANES_IMPLEMENTATION == 'python'\n"
        "for case in json.load(open(sys.argv[1])).values():\n"
        "    raw = codecs.decode_chunk(case['codec'], bytes.fromhex(case['payload']), case['raw_len'])\n"
        "    assert blake3.blake3(raw).hexdigest() == case['raw_blake3']\n"
    )
    subprocess.run([sys.executable, "-c", script, str(GOLDEN)], env={**os.environ, "OBJSTORE_NATIVE": "0"}, check=True)
