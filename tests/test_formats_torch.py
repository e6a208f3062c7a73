"""The torch.save checkpoint parser (storage/formats/torch.py), on files torch writes
and on hostile ones: never unpickled, never a traceback."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.storage import formats
from objstore.storage.formats import torch as torchfmt
from objstore.storage.formats.base import ParsedFile

torch = pytest.importorskip("torch")


def _parse(data: bytes) -> ParsedFile | None:
    return formats.parse(io.BytesIO(data), len(data))


def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_a_state_dict_is_one_tensor_segment_per_storage_with_its_dtype_and_bytes() -> None:
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.LayerNorm(8))
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    sd["half"] = torch.randn(3, 5, generator=g).half()
    sd["bf"] = torch.randn(7, generator=g).bfloat16()
    sd["steps"] = torch.tensor(11)
    data = _saved(sd)
    parsed = _parse(data)
    assert parsed is not None and parsed.format == "torch"
    by_name = {t.name: t for t in parsed.tensors}
    assert set(by_name) == set(sd)
    want = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    for name, tensor in sd.items():
        t = by_name[name]
        assert (t.dtype, t.shape) == (want[tensor.dtype], tuple(tensor.shape))
        raw = tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        assert data[t.offset:t.offset + t.length] == raw


def test_shared_and_strided_storages_are_segmented_as_the_storage() -> None:
    w = torch.randn(4, 6)
    sd = {"embed": w, "lm_head": w, "t": torch.randn(5, 3).t(), "row": torch.arange(20.0)[4:9],
          "nested": {"inner.weight": torch.ones(2, 2)}, "param": torch.nn.Parameter(torch.zeros(3))}
    parsed = _parse(_saved(sd))
    assert parsed is not None
    names = {t.name: (t.dtype, t.shape) for t in parsed.tensors}
    # tied: one view under two names is the tensor (named by the first); a transpose or a
    # slice is its storage, still one F32 segment
    assert names["embed"] == ("F32", (4, 6)) and "lm_head" not in names
    assert sorted(n for n in names if n.startswith("storage ")) == ["storage 1", "storage 2"]
    assert names["nested/inner.weight"] == ("F32", (2, 2)) and names["param"] == ("F32", (3,))


def _checkpoint(pickled: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", b"little")
        for name, content in (extra or {}).items():
            z.writestr(name, content)
    return buf.getvalue()


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os
        return os.system, (self.command,)


def test_a_pickle_naming_os_system_is_chunked_plainly_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = pickle.dumps({"w": _System(f"touch {marker}")}, protocol=2)
    assert b"posix\nsystem" in evil or b"os\nsystem" in evil
    for data in (_checkpoint(evil), _checkpoint(pickle.dumps(_System(f"touch {marker}"), protocol=4))):
        assert _parse(data) is None
        assert torchfmt.parse(io.BytesIO(data), len(data)) is None
    assert not marker.exists()


@pytest.mark.parametrize("pickled", [
    b"\x80\x02}q\x00.",                              # an empty dict: no tensors, a checkpoint still
    b"\x80\x02(X\x01\x00\x00\x00ab.",                # a mark left on the stack
    b"\x80\x02]q\x00h\x00a.",                        # a list holding itself
    b"\x80\x02" + b"(" * 100000 + b".",              # deep marks
    b"\x80\x02X\xff\xff\xff\x7fab.",                 # a string longer than the pickle
    b"garbage",
])
def test_malformed_pickles_are_no_checkpoint_or_an_empty_one(pickled: bytes) -> None:
    parsed = torchfmt.parse(io.BytesIO(data := _checkpoint(pickled)), len(data))
    assert parsed is None or parsed.tensors == ()


def _nested_lists(depth: int, leaf: bytes = b"") -> bytes:
    """A pickle of ``depth`` lists, each in the one before (two bytes a level), ``leaf`` in the last."""
    return b"\x80\x02" + b"]" * depth + leaf + b"a" * (depth - 1) + b"."


def test_nesting_deeper_than_any_checkpoint_is_refused() -> None:
    """Each level's name was built by copying its parent's (``0/0/0/…``): time grew with the square
    of the depth, 2.4 CPU-s for a 640 KB file and hours for a 64 MB one (before the fix it parsed,
    as an empty checkpoint). Real checkpoints nest a handful of levels."""
    assert _parse(_checkpoint(_nested_lists(torchfmt.MAX_DEPTH))) is not None
    assert _parse(_checkpoint(_nested_lists(torchfmt.MAX_DEPTH + 1))) is None
    assert _parse(_checkpoint(_nested_lists(300_000))) is None


def test_a_tensor_named_more_times_than_a_file_holds_tensors_is_refused() -> None:
    """One tensor in a list MAX_TENSORS + 1 times (a two-byte memo get each): every view was kept
    with its name, 237 MiB more RSS and 3.3 CPU-s for this 2.1 MB file (~110 bytes per pickle
    byte; before the fix it parsed, as the one tensor "0")."""
    t = torch.randn(2)
    assert _parse(_saved([t] * (torchfmt.MAX_TENSORS + 1))) is None


def test_a_storage_whose_entry_lies_about_its_size_is_refused() -> None:
    data = _saved({"w": torch.randn(8)})
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    key = next(n for n in entries if "/data/" in n)
    entries[key] = entries[key][:-4]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, content in entries.items():
            z.writestr(name, content)
    assert _parse(buf.getvalue()) is None


_SMALL = _saved({"a": torch.randn(16), "b": torch.randn(4, 4).half(), "c": {"d": torch.arange(6)}})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_or_truncated_checkpoints_parse_to_a_checked_layout_or_none(data: st.DataObject) -> None:
    raw = bytearray(_SMALL)
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    for _ in range(data.draw(st.integers(0, 8))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    parsed = torchfmt.parse(io.BytesIO(bytes(raw)), len(raw))  # never raises
    if parsed is not None:
        ends = [(t.offset, t.offset + t.length) for t in parsed.tensors]
        assert all(0 <= a <= b <= len(raw) for a, b in ends) and all(x[1] <= y[0] for x, y in zip(ends, ends[1:]))
