"""PyTorch checkpoints written by ``torch.save`` (the zip format, PyTorch ≥ 1.6).

The zip holds ``<archive>/data.pkl`` (the pickled object: a state dict, or a
dict of them), one stored entry ``<archive>/data/<key>`` per storage, and small
entries (``byteorder``, ``version`` …). Each tensor in the pickle is
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, …)``,
its storage a persistent id ``('storage', torch.<Type>Storage, key, location,
numel)``.

Invariants:

- The pickle is never unpickled: its opcodes are decoded by
  :func:`pickletools.genops` (which only decodes) and run here on a small stack
  machine that builds plain values. A ``GLOBAL`` is a name, never imported; any
  name outside :data:`ALLOWED` (a subset of what ``torch.load(weights_only=True)``
  allows) makes the file "not a checkpoint we read", so it is chunked plainly.
  The pickle is at most :data:`MAX_PICKLE` bytes and its memo and stack are
  bounded by its opcodes.
- One tensor segment per storage entry, carrying the storage's dtype. It is
  named as the tensor when exactly one view of that storage is pickled (under
  one or more names: tied weights) and that view is contiguous over the whole
  storage; then the tensor's shape is given too. Any other storage (several
  views, slices, transposes) is named ``storage <key>`` with shape ``(numel,)``:
  its bytes are still one dtype segment, but it is no tensor to diff by name or
  read lazily.
- Names: a state dict's keys; in nested dicts and lists, the path joined by
  ``/`` (``model/encoder.weight``, ``optimizer/state/0/exp_avg``). A pickle nested deeper than
  :data:`MAX_DEPTH` or naming more than ``MAX_TENSORS`` tensors is no checkpoint (walking it cost
  the square of its depth, or memory for every two bytes); a name over :data:`MAX_NAME` is its storage's.
"""

from __future__ import annotations

import io
import math
import pickletools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from objstore.storage.formats import zipfiles
from objstore.storage.formats.base import DTYPE_SIZES, MAX_TENSORS, ParsedFile, TensorInfo, checked

FORMAT = "torch"

# A data.pkl larger than this is no checkpoint we read (a state dict's pickle is
# about 100 bytes per tensor).
MAX_PICKLE = 64 * 1024 * 1024

# torch.<Name>Storage -> dtype, as safetensors spells it.
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL", "ComplexFloatStorage": "C64",
    "UInt16Storage": "U16", "UInt32Storage": "U32", "UInt64Storage": "U64",
    "Float8_e4m3fnStorage": "F8_E4M3", "Float8_e5m2Storage": "F8_E5M2",
}
_REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = ("torch._utils", "_rebuild_parameter")
_ORDERED_DICT = ("collections", "OrderedDict")
# The only globals a checkpoint may name (all in torch.load(weights_only=True)'s allow-list).
ALLOWED = frozenset({_REBUILD_TENSOR, _REBUILD_PARAMETER, _ORDERED_DICT, ("torch", "Size"),
                     *(("torch", name) for name in STORAGE_DTYPES)})


class _Refused(Exception):
    """The pickle does something a plain checkpoint does not: not ours to read."""


@dataclass(frozen=True, slots=True)
class _Global:
    module: str
    name: str


@dataclass(frozen=True, slots=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True, slots=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Mark:
    pass


_MARK = _Mark()

# Containers inside containers: a checkpoint nests a handful (``optimizer/state/0/exp_avg``); a
# pickle nests a level for every two bytes, so deeper is a hostile file, not a checkpoint.
MAX_DEPTH = 64
# A tensor's name longer than this is a storage's (``storage 3``): memo'd keys cost nothing to repeat.
MAX_NAME = 4096


def sniff(head: bytes, size: int) -> bool:
    return zipfiles.sniff(head, size)


def parse(f: BinaryIO, size: int) -> ParsedFile | None:
    entries = zipfiles.entries(f, size)
    if entries is None:
        return None
    pickles = [e for e in entries.values() if e.name.endswith("/data.pkl") and e.name.count("/") == 1]
    if len(pickles) != 1 or not pickles[0].stored or pickles[0].length > MAX_PICKLE:
        return None
    prefix = pickles[0].name[: -len("data.pkl")]
    order = entries.get(prefix + "byteorder")
    if order is not None and (not order.stored or _read(f, order.offset, order.length) != b"little"):
        return None  # a big-endian checkpoint's bytes are not the dtype's little-endian words
    try:
        obj = _run(_read(f, pickles[0].offset, pickles[0].length))
    except _Refused:
        return None
    # Per storage key: its first view with that view's path, and whether every other view is that one
    # (kept so, not as a list of every view: a memo get names a tensor again for two bytes).
    views: dict[str, tuple[tuple[str, ...], _Tensor, bool]] = {}
    storages: dict[str, _Storage] = {}
    try:
        for path, tensor in _tensors(obj):
            s = tensor.storage
            if storages.setdefault(s.key, s) != s:
                return None  # one key, two storages
            first = views.setdefault(s.key, (path, tensor, True))
            if first[2] and first[1] != tensor:
                views[s.key] = (first[0], first[1], False)
    except _Refused:
        return None
    tensors = []
    for key, storage in storages.items():
        entry = entries.get(f"{prefix}data/{key}")
        if entry is None or not entry.stored or entry.length != storage.numel * DTYPE_SIZES[storage.dtype]:
            return None
        tensors.append(_segment(key, storage, views[key], entry.offset, entry.length))
    return checked(FORMAT, tensors, {}, size)


def _segment(key: str, storage: _Storage, views: tuple[tuple[str, ...], _Tensor, bool], offset: int,
             length: int) -> TensorInfo:
    path, first, alone = views
    whole = alone and first.offset == 0 and math.prod(first.shape) == storage.numel
    if whole and _contiguous(first.shape, first.stride) and sum(map(len, path)) + len(path) <= MAX_NAME:
        return TensorInfo("/".join(path), storage.dtype, first.shape, offset, length)
    return TensorInfo(f"storage {key}", storage.dtype, (storage.numel,), offset, length)


def _contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(shape), reversed(stride)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return len(shape) == len(stride)


def _read(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise OSError(f"the file ended inside {length} bytes at {offset}")
    return data


def _tensors(obj: object) -> Iterator[tuple[tuple[str, ...], _Tensor]]:
    """Every tensor in the unpickled value, with its name's parts (see the module docstring), in
    order; _Refused past :data:`MAX_DEPTH` levels or :data:`MAX_TENSORS` tensors. Memory is the
    depth's: one iterator per open container (listing a container's items first took ~150 bytes
    for each two-byte memo get in it), and a path is a tuple of the keys (building ``a/b/c``
    strings level by level cost the square of the depth)."""
    seen: set[int] = set()  # memo references can make a container hold itself
    count = 0
    stack: list[tuple[tuple[str, ...], Iterator[tuple[object, object]]]] = [((), iter([(None, obj)]))]
    while stack:
        path, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        key, value = item
        here = path if key is None else (*path, str(key))
        if isinstance(value, _Tensor):
            count += 1
            if count > MAX_TENSORS:  # the memo names one tensor again and again for 2 bytes each
                raise _Refused
            yield here, value
        elif isinstance(value, (dict, list, tuple)) and id(value) not in seen:
            seen.add(id(value))
            if len(here) >= MAX_DEPTH:
                raise _Refused
            stack.append((here, iter(value.items()) if isinstance(value, dict) else enumerate(value)))


_SIMPLE = frozenset({"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG", "BINFLOAT", "FLOAT",
                     "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                     "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"})
_CONSTANTS: dict[str, object] = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _run(data: bytes) -> object:
    """Run the pickle's opcodes on plain values; _Refused for anything a checkpoint does not do."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in _SIMPLE:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name == "STOP":
                if len(stack) != 1:
                    raise _Refused
                return stack[0]
            elif not _step(name, arg, stack, memo):
                raise _Refused
            if len(memo) > 8 * MAX_TENSORS:
                raise _Refused
    except (ValueError, IndexError, KeyError, TypeError, OverflowError):
        raise _Refused from None
    raise _Refused


def _step(name: str, arg: Any, stack: list[Any], memo: dict[int, Any]) -> bool:
    """One structural opcode; False for one no checkpoint uses."""
    if name in ("PROTO", "FRAME"):
        pass
    elif name == "MARK":
        stack.append(_MARK)
    elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
        stack.append({} if name == "EMPTY_DICT" else [] if name == "EMPTY_LIST" else ())
    elif name in _CONTAINER_OPS:
        return _container(name, stack)
    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
        memo[int(arg)] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("BINGET", "LONG_BINGET", "GET"):
        stack.append(memo[int(arg)])
    elif name in ("GLOBAL", "STACK_GLOBAL"):
        module, attr = _split_global(str(arg)) if name == "GLOBAL" else _pop_two_strings(stack)
        if (module, attr) not in ALLOWED:
            return False
        stack.append(_Global(module, attr))
    elif name == "BINPERSID":
        stack.append(_storage(stack.pop()))
    elif name == "REDUCE":
        args = stack.pop()
        func = stack.pop()
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            return False
        stack.append(_reduce(func, args))
    elif name == "BUILD":
        stack.pop()  # an OrderedDict's state (its _metadata): nothing of a tensor's layout
        if not isinstance(stack[-1], dict):
            return False
    elif name == "POP":
        stack.pop()
    else:
        return False
    return True


_CONTAINER_OPS = frozenset({"TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "LIST", "DICT", "APPENDS", "SETITEMS",
                            "APPEND", "SETITEM"})


def _container(name: str, stack: list[Any]) -> bool:
    """An opcode that builds or fills a tuple, list or dict; False for a malformed one."""
    if name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        last = tuple(stack[-n:])
        del stack[-n:]
        if len(last) != n or _MARK in last:
            return False
        stack.append(last)
    elif name in ("TUPLE", "LIST", "DICT", "APPENDS", "SETITEMS"):
        items = _pop_mark(stack)
        if name == "TUPLE":
            stack.append(tuple(items))
        elif name == "LIST":
            stack.append(list(items))
        elif name == "APPENDS":
            _target(stack, list).extend(items)
        else:
            if len(items) % 2:
                return False
            target = {} if name == "DICT" else _target(stack, dict)
            for k, v in zip(items[::2], items[1::2]):
                target[_key(k)] = v
            if name == "DICT":
                stack.append(target)
    elif name == "APPEND":
        value = stack.pop()
        _target(stack, list).append(value)
    elif name == "SETITEM":
        value, key = stack.pop(), stack.pop()
        _target(stack, dict)[_key(key)] = value
    return True


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise _Refused


def _split_global(arg: str) -> tuple[str, str]:
    module, _, attr = arg.partition(" ")
    return module, attr


def _pop_two_strings(stack: list[Any]) -> tuple[str, str]:
    attr, module = stack.pop(), stack.pop()
    if not isinstance(module, str) or not isinstance(attr, str):
        raise _Refused
    return module, attr


def _target(stack: list[Any], kind: type) -> Any:
    if not stack or not isinstance(stack[-1], kind):
        raise _Refused
    return stack[-1]


def _key(key: object) -> str:
    if not isinstance(key, (str, int)) or isinstance(key, bool):
        raise _Refused
    return str(key)


def _storage(pid: object) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Global)):
        raise _Refused
    _, kind, key, _location, numel = pid
    dtype = STORAGE_DTYPES.get(kind.name) if kind.module == "torch" else None
    if dtype is None or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise _Refused
    return _Storage(key, dtype, numel)


def _reduce(func: _Global, args: tuple[Any, ...]) -> Any:
    target = (func.module, func.name)
    if target == _ORDERED_DICT and not args:
        return {}
    if target == _REBUILD_PARAMETER and len(args) >= 1 and isinstance(args[0], _Tensor):
        return args[0]
    if target == _REBUILD_TENSOR and len(args) >= 4:
        storage, offset, shape, stride = args[:4]
        if (isinstance(storage, _Storage) and isinstance(offset, int) and _ints(shape) and _ints(stride)
                and offset >= 0 and len(shape) == len(stride)):
            return _Tensor(storage, offset, tuple(shape), tuple(stride))
    if target == ("torch", "Size") and len(args) == 1 and _ints(args[0]):
        return tuple(args[0])
    raise _Refused


def _ints(value: object) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
