"""One boundary for ONNX Runtime failures during export: validation, smoothing and calibration runs.

onnxruntime raises its own exception types (Fail, InvalidArgument, RuntimeException, ...) with the failing
node buried in the message; :func:`ort_failure` turns one into a :class:`GraphRunError` that names the node,
its op and the likely cause, so no export ends in a raw traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from edgekit.errors import EdgekitError, GraphRunError
from runtimes.decoder_feeds import fit_to_graph

T = TypeVar("T")

# ORT's kernel failures read "... while running Gather node. Name:'/x/Gather' Status Message: ...".
_NODE = re.compile(r"running (?P<op>[\w.]+) node\. Name:'(?P<node>[^']*)' Status Message: (?P<msg>.*)", re.S)
_BAD_INPUT = re.compile(r"(?:invalid dimensions|Unexpected input data type|Invalid rank)\D*?input: (?P<input>\S+)")
# (text in ORT's message, the likely cause and its fix): the first match gives the hint.
_CAUSES = (
    (
        "out of data bounds",
        "an index exceeds its table, most often a text longer than the position table:"
        " lower preprocessing max_length or give shorter samples",
    ),
    ("invalid dimensions", "a sample's shape does not match the graph's input: check the data's shapes"),
    ("data type", "a sample's dtype does not match the graph's input: check the data's dtypes"),
    ("shall be", "the graph breaks an ONNX Runtime kernel limit: export without fusions (--option fusions=false)"),
)


def ort_failure(exc: BaseException, *, during: str, hint: str | None = None) -> GraphRunError:
    """The typed error for an onnxruntime exception raised ``during`` (e.g. "validation of int8.onnx")."""
    text = str(exc).strip()
    found = _NODE.search(text)
    if found:
        detail = found["msg"].strip().splitlines()[0]
        where = f"node {found['node']!r} ({found['op']})"
    else:
        bad_input = _BAD_INPUT.search(text)
        detail = text.splitlines()[0] if text else type(exc).__name__
        where = f"input {bad_input['input']!r}" if bad_input else "the graph"
    cause = next((c for pattern, c in _CAUSES if pattern in text), None)
    hints = [h for h in (cause, hint) if h]
    return GraphRunError(
        f"ONNX Runtime failed in {where} during {during}: {detail}",
        hint="; ".join(hints) or None,
        node=found["node"] if found else None,
        op_type=found["op"] if found else None,
    )


def guarded(call: Callable[[], T], *, during: str, hint: str | None = None) -> T:
    """``call()``, with any non-edgekit exception translated by :func:`ort_failure`."""
    try:
        return call()
    except EdgekitError:
        raise
    except Exception as exc:  # onnxruntime's pybind exceptions share no public base class
        raise ort_failure(exc, during=during, hint=hint) from None


def run_session(sess: Any, outputs: list[str] | None, feeds: dict[str, Any], *, during: str) -> list[Any]:
    """``sess.run``, translated. A sample written with an attention mask runs on a decoder that takes
    GroupQueryAttention's lengths instead (the reference and the package graph share one set of samples)."""
    names = {i.name for i in sess.get_inputs()}
    return guarded(lambda: sess.run(outputs, fit_to_graph(feeds, names)), during=during)
