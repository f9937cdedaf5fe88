"""The report's per-node table: the nodes that took the most time on this host, and who would run them.

ONNX Runtime's profile names the nodes of the graph it ran, after its own fusions; the execution-provider
coverage (:mod:`.coverage`) is of the stored graph, as a device's partitioner sees it. Each measured node
is traced back to the stored nodes it came from:

1. a stored node of the same name (no fusion touched it);
2. a node of the saved runtime graph (``static.runtime_graph``): the stored nodes between its inputs and
   its outputs, i.e. what the fusion replaced;
3. a stored node whose name prefixes it (ORT names fused nodes ``<first node>/<FusionName>`` or
   ``<node>_quant``-style);
4. none: a node the optimizer made (layout reorders), whose provider the report leaves unknown.

Per device, the node's provider is the one coverage gives all its stored nodes; several means the fused
node would be split on that device (the report says ``A + B``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgekit.profiler.coverage import DeviceCoverage, node_key

__all__ = ["GraphIndex", "node_rows"]

_TRACE_LIMIT = 256  # stored nodes one fused node may stand for; beyond that the trace is not a fusion


@dataclass(frozen=True, kw_only=True)
class GraphIndex:
    """Just the wiring of a graph (names, inputs, outputs): the models themselves can be dropped."""

    names: frozenset[str]
    producer: Mapping[str, str]  # value -> node key
    inputs: Mapping[str, tuple[str, ...]]  # node key -> its input values
    outputs: Mapping[str, tuple[str, ...]]  # node key -> its output values

    @classmethod
    def of(cls, model: Any) -> GraphIndex:
        nodes = list(model.graph.node)
        return cls(
            names=frozenset(node_key(n) for n in nodes),
            producer={o: node_key(n) for n in nodes for o in n.output if o},
            inputs={node_key(n): tuple(i for i in n.input if i) for n in nodes},
            outputs={node_key(n): tuple(o for o in n.output if o) for n in nodes},
        )


def _trace(runtime_node: str, runtime: GraphIndex, stored: GraphIndex) -> list[str]:
    """Stored nodes computing ``runtime_node``'s outputs from its inputs (walked backwards)."""
    stop = set(runtime.inputs.get(runtime_node, ()))
    frontier = list(runtime.outputs.get(runtime_node, ()))
    found: list[str] = []
    seen: set[str] = set()
    while frontier and len(found) < _TRACE_LIMIT:
        value = frontier.pop()
        producer = stored.producer.get(value)
        if value in stop or producer is None or producer in seen:
            continue
        seen.add(producer)
        found.append(producer)
        frontier.extend(stored.inputs.get(producer, ()))
    return [] if len(found) >= _TRACE_LIMIT else found[::-1]


def stored_sources(name: str, runtime: GraphIndex, stored: GraphIndex) -> tuple[list[str], str]:
    """The stored nodes a measured node stands for, and how they were found (see the module docstring)."""
    if name in stored.names:
        return [name], "stored node"
    if name in runtime.names:
        traced = _trace(name, runtime, stored)
        if traced:
            return traced, f"fused by ONNX Runtime from {len(traced)} stored node(s)"
    prefixes = [s for s in stored.names if name.startswith(s) and name[len(s) : len(s) + 1] in ("/", "_")]
    if prefixes:
        return [max(prefixes, key=len)], "renamed by ONNX Runtime"
    return [], "made by ONNX Runtime's optimizer (no stored node)"


def _provider(sources: Sequence[str], coverage: DeviceCoverage) -> str | None:
    takers = [coverage.provider_for(s) for s in sources]
    if not takers or any(t is None for t in takers):
        return None
    order = [p.provider for p in coverage.providers]
    distinct = sorted(set(takers), key=lambda t: order.index(t) if t in order else len(order))
    return " + ".join(distinct)


def node_rows(
    phase: str,
    top_nodes: Sequence[Mapping[str, Any]],
    *,
    runtime: GraphIndex,
    stored: GraphIndex,
    coverages: Sequence[DeviceCoverage],
) -> list[dict[str, Any]]:
    """One row per measured node (in the measurement's order: most time first)."""
    rows = []
    for n in top_nodes:
        sources, how = stored_sources(str(n["node"]), runtime, stored)
        rows.append(
            {
                "phase": phase,
                "node": n["node"],
                "op_type": n["op_type"],
                "time_ms": n["time_ms"],
                "share": n["share"],
                "stored_nodes": sources,
                "mapping": how,
                "providers": {c.device: _provider(sources, c) for c in coverages},
            }
        )
    return rows
