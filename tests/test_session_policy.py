"""The session policy (edgekit.session_policy): the decision from measured ratios, the per-node work rule for
another CPU, and the runtime applying what the manifest records. No test here depends on this CPU's timing:
measurements are injected (ratios, a fake clock) and the package's policy is written into its manifest."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgekit.devices import get_device
from edgekit.devices.host import detect_cpu
from edgekit.manifest import Manifest
from edgekit.session_policy import (
    ALL,
    OVERHEAD_BOUND_NODE_US,
    CallWork,
    SessionPolicy,
    apply_policy,
    choose_policy,
    device_core_gflops,
    rule_threads,
)

# A tiny decoder's decode step: 30 nodes, 0.3 ms on one core of a 50 GFLOP/s host -> 0.5 MFLOP, 10 us a node.
TINY = CallWork(workload="decode step", nodes=30, host_core_ms=0.3, host_core_gflops=50.0)
# An encoder call: 300 nodes, 60 ms -> 3000 MFLOP, 200 us a node.
LARGE = CallWork(workload="median sample", nodes=300, host_core_ms=60.0, host_core_gflops=50.0)


def _choose(one_vs_all, spin=None, cores=4):
    return choose_policy(one_vs_all=one_vs_all, spin_off_vs_on=spin, all_threads=cores, work=TINY, cpu="CPU X")


def test_measured_ratios_decide_threads_and_spinning():
    fast_one = _choose([0.55, 0.6, 0.58, 2.0, 0.57])  # one descheduled round does not move the median
    assert fast_one.intra_op_threads == 1 and fast_one.rule == "measured" and not fast_one.allow_spinning
    assert fast_one.measured == {"one_vs_all_threads": 0.58, "all_threads": 4, "rounds": 5}
    # within the 10 % tie band one thread wins: the same speed, three cores left free
    assert _choose([1.08, 1.05, 1.09]).intra_op_threads == 1
    many = _choose([3.0, 3.2, 2.9], spin=[1.4, 1.5, 1.3])
    assert many.intra_op_threads == ALL and many.allow_spinning and many.measured["spinning_off_vs_on"] == 1.4
    assert "4 threads run the call 3.00x faster" in many.reason
    assert _choose([3.0, 3.2, 2.9], spin=[0.9, 1.0, 0.95]).allow_spinning is False


def test_one_core_host_falls_back_to_the_per_node_rule():
    p = choose_policy(one_vs_all=None, spin_off_vs_on=None, all_threads=1, work=LARGE, cpu="CPU X")
    assert p.rule == "per-node-work" and p.intra_op_threads == ALL


def test_per_node_work_rule():
    assert TINY.mflop == pytest.approx(15.0) and TINY.node_us(50.0) == pytest.approx(10.0)
    assert rule_threads(TINY, 50.0)[0] == 1
    assert rule_threads(LARGE, 50.0)[0] == ALL
    # the same tiny call on a core 4x slower than the host's is no longer overhead-bound
    slow_core = TINY.mflop / TINY.nodes / OVERHEAD_BOUND_NODE_US * 1e3 / 2
    assert rule_threads(TINY, slow_core)[0] == ALL


def test_apply_policy_order_caller_measured_rule_default():
    measured = _choose([0.5, 0.5, 0.5])
    caller = apply_policy(measured, threads=3, all_threads=8, cpu="CPU X")
    assert (caller.threads, caller.source) == (3, "caller")
    same = apply_policy(measured, threads=None, all_threads=8, cpu="CPU X")
    assert (same.threads, same.source, same.allow_spinning) == (1, "package-measured", False)
    # another CPU: the measurement does not hold there; the rule decides (from the export host's core rate)
    other = apply_policy(measured, threads=None, all_threads=8, cpu="CPU Y")
    assert (other.threads, other.source) == (1, "package-rule") and "not the export host's CPU X" in other.reason
    big = dataclasses.replace(measured, work=LARGE)
    assert apply_policy(big, threads=None, all_threads=8, cpu="CPU Y").threads == 8
    default = apply_policy(None, threads=None, all_threads=6, cpu="CPU X")
    assert (default.threads, default.source) == (6, "default")


def test_named_device_uses_its_big_core_rate():
    pi5 = get_device("raspberry-pi-5")
    assert device_core_gflops(pi5) == pytest.approx(2.4 * 16)  # one Cortex-A76: GHz x FLOP/cycle
    on_pi = apply_policy(_choose([0.5] * 5), threads=None, all_threads=4, cpu="CPU X", device=pi5)
    assert on_pi.source == "package-rule" and on_pi.reason.startswith("on raspberry-pi-5")
    # 15 MFLOP over 30 nodes at 38.4 GFLOP/s is ~13 us a node: still one thread
    assert on_pi.threads == 1
    assert apply_policy(dataclasses.replace(_choose([0.5] * 5), work=LARGE), threads=None, all_threads=4,
                        cpu="CPU X", device=pi5).threads == 4  # fmt: skip


def test_manifest_round_trips_the_policy():
    policy = _choose([0.5] * 5)
    d = {"session_policy": policy.to_dict(), "speedup": None}
    from edgekit.manifest import RuntimeInfo, _build

    back = _build(RuntimeInfo, json.loads(json.dumps(d)), "runtime")
    assert back.session_policy == policy and isinstance(back.session_policy.work, CallWork)


def _with_policy(pkg: Path, policy: SessionPolicy) -> None:
    path = pkg / "edgekit.json"
    d = json.loads(path.read_text())
    d["runtime"] = {"session_policy": policy.to_dict()}
    Manifest.from_dict(d)  # still a valid manifest
    path.write_text(json.dumps(d))


def test_runtime_applies_the_manifest_policy(tensor_package, fresh_copy, tmp_path):
    import runtimes

    pkg = fresh_copy(tensor_package)
    measured_here = dataclasses.replace(_choose([0.5] * 5), cpu=detect_cpu().model)
    _with_policy(pkg, measured_here)
    cache = tmp_path / "graphs"
    m = runtimes.load(pkg, cache_dir=cache)
    info = m.info()
    assert m.session.threads == 1 and info["threads"] == 1
    assert info["session_policy"]["source"] == "package-measured" and m.session.config.allow_spinning is False
    m2 = runtimes.load(pkg, threads=2, cache_dir=cache)
    assert m2.session.threads == 2 and m2.info()["session_policy"]["source"] == "caller"
    _with_policy(pkg, dataclasses.replace(measured_here, cpu="another CPU", work=LARGE))
    m3 = runtimes.load(pkg, cache_dir=cache)
    from runtimes.session import physical_cores

    assert m3.info()["session_policy"]["source"] == "package-rule" and m3.session.threads == physical_cores()


def test_interleaved_rounds_rotate_and_report_per_call_time():
    from exporters.speed import MAX_ROUNDS, ROUND_TARGET_S, WARMUP_CALLS, interleaved, per_round_ratios

    now = [0.0]
    order: list[str] = []

    def call(name: str, cost: float):
        def run() -> None:
            order.append(name)
            now[0] += cost

        return run

    rounds = interleaved([call("a", 0.002), call("b", 0.001)], clock=lambda: now[0])
    assert len(rounds) == MAX_ROUNDS  # 40 ms a round never reaches the time budget
    assert per_round_ratios(rounds, 0, 1) == pytest.approx([2.0] * MAX_ROUNDS)
    # warm-up calls, one sizing call each, then per round one block per peer (about ROUND_TARGET_S long), the
    # first place rotating
    a, b = round(ROUND_TARGET_S / 0.002), round(ROUND_TARGET_S / 0.001)
    head = ["a"] * (WARMUP_CALLS + 1) + ["b"] * (WARMUP_CALLS + 1)
    assert order[: len(head) + a + 2 * b + a] == head + ["a"] * a + ["b"] * b + ["b"] * b + ["a"] * a
