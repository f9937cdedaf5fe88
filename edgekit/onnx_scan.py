"""A standard-library scan of an ONNX file's top-level graph: opset, node count and op histogram.

Why: ``edgekit inspect`` must work on a device install, which has onnxruntime but not the ``onnx`` package.
The protobuf wire format is simple enough to walk for the few fields inspect shows (ModelProto.opset_import
= 8, ModelProto.graph = 7, GraphProto.node = 1, NodeProto.op_type = 4); weights (raw_data) are skipped by
their length, never decoded, so a large model scans in milliseconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import CorruptModelError

__all__ = ["scan_model"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints, a memoryview for length-delimited fields."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            value, pos = buf[pos : pos + width], pos + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _opset(entry: memoryview) -> tuple[str, int]:
    domain, version = "", 0
    for number, wire, value in _fields(entry):
        if number == 1 and wire == _LEN:
            domain = bytes(value).decode("utf-8", "replace")
        elif number == 2 and wire == _VARINT:
            version = value
    return domain, version


def _op_type(node: memoryview) -> str:
    for number, wire, value in _fields(node):
        if number == 4 and wire == _LEN:
            return bytes(value).decode("utf-8", "replace")
    return ""


def scan_model(path: str | Path) -> dict[str, Any]:
    """``{"opset", "nodes", "ops"}`` of the model at ``path`` (ops most common first, like exporters.graph)."""
    p = Path(path)
    try:
        data = memoryview(p.read_bytes())
        opset = 0
        ops: Counter[str] = Counter()
        for number, wire, value in _fields(data):
            if number == 8 and wire == _LEN:
                domain, version = _opset(value)
                if domain in ("", "ai.onnx"):
                    opset = version
            elif number == 7 and wire == _LEN:
                ops.update(_op_type(v) for n, w, v in _fields(value) if n == 1 and w == _LEN)
    except (OSError, ValueError) as exc:
        raise CorruptModelError(
            f"{p} is not a readable ONNX model ({exc})",
            hint="the file is corrupt or truncated: export or download it again",
        ) from None
    return {"opset": opset, "nodes": sum(ops.values()), "ops": dict(ops.most_common())}
