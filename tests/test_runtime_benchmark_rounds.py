"""benchmarks/runtime.py's interleaved rounds: rotation, and the untimed settle pause after every run."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import runtime as bench


def _peer(name: str, log: list[str], seconds: float) -> bench.Peer:
    def run() -> tuple[list[int], float, float]:
        log.append(name)
        return [0] * bench.NEW_TOKENS, seconds, seconds / 10

    return bench.Peer(name, name, run)


def test_every_run_is_followed_by_the_settle_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT's intra-op threads spin for tens of ms after a run: each run (warm-up included) is followed by an
    untimed pause before the next peer starts, and the rotation still gives each peer every position."""
    events: list[Any] = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("sleep", s)))

    class Recording(list):  # the run log and the pauses, in one order
        def append(self, item: Any) -> None:
            events.append(("run", item))
            super().append(item)

    log = Recording()
    peers = [_peer("a", log, 0.254), _peer("b", log, 0.127), _peer("c", log, 0.0127)]
    timings, tokens, prefill = bench.time_peers(peers, rounds=3, settle=0.25)
    runs = [e for e in events if e[0] == "run"]
    assert len(runs) == 3 + 3 * 3
    assert all(events[i + 1] == ("sleep", 0.25) for i, e in enumerate(events) if e[0] == "run")
    assert [e[1] for e in runs[3:]] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    steps = bench.NEW_TOKENS - 1
    assert timings["a"].rounds == pytest.approx([0.254 / steps] * 3)
    assert prefill["c"].rounds == pytest.approx([0.00127] * 3)
    assert tokens["b"] == [0] * bench.NEW_TOKENS


def test_diagnostics_option_picks_variants_and_the_small_pages_variant_restores_the_policy() -> None:
    from edgekit import ort_policy

    assert bench._parser().parse_args([]).diagnostics.split(",") == list(bench.DIAG_KEYS)
    assert bench._parser().parse_args(["--no-diagnostics"]).diagnostics == ""
    with pytest.raises(SystemExit):
        bench.main(["--diagnostics", "pages,nope", "--no-genai"])
    real = ort_policy.MEMORY_POLICY
    with bench._small_pages():
        assert ort_policy.MEMORY_POLICY.huge_pages is False
        assert not ort_policy.huge_pages_wanted(low_memory=False)
    assert ort_policy.MEMORY_POLICY is real and ort_policy.huge_pages_wanted(low_memory=False)


def test_a_peers_sessions_are_warmed_up_then_used_in_turn_across_rounds() -> None:
    """--sessions: the edgekit and genai peers' sessions take the rounds in turn, so one session's memory
    placement is not the peer's whole figure; the sessions after the first are warmed up when the peer is built."""
    log: list[str] = []
    runs = [_peer(f"s{i}", log, 0.1 * (i + 1)).run for i in range(3)]
    peer = bench.Peer("edgekit", "edgekit", bench.in_turn(runs))
    assert log == ["s1", "s2"]  # s0 is warmed up by time_peers, as every peer is
    log.clear()
    timings, _, _ = bench.time_peers([peer], rounds=5, settle=0.0)
    assert log == ["s0", "s1", "s2", "s0", "s1", "s2"]  # time_peers' warm-up takes s0, then the rounds in turn
    steps = bench.NEW_TOKENS - 1
    assert timings["edgekit"].rounds == pytest.approx([x / steps for x in (0.2, 0.3, 0.1, 0.2, 0.3)])


def test_the_genai_peer_loads_one_model_per_session_under_its_own_name() -> None:
    asked: list[dict[str, Any]] = []

    class FakeWorker:
        def ask(self, **req: Any) -> dict[str, Any]:
            asked.append(req)
            return {"tokens": [1] * bench.NEW_TOKENS, "decode_seconds": 0.5, "prefill_seconds": 0.05}

    peer = bench.genai_peer(FakeWorker(), bench.Path("/m"), "tiny-int4", [1, 2], {"command": "builder"}, sessions=2)
    assert [(r["cmd"], r["name"]) for r in asked] == [
        ("load", "tiny-int4"),
        ("load", "tiny-int4#1"),
        ("run", "tiny-int4#1"),
    ]
    asked.clear()
    peer.run()
    peer.run()
    assert [r["name"] for r in asked] == ["tiny-int4", "tiny-int4#1"]


def test_the_own_process_edgekit_peer_loads_its_sessions_in_its_worker_and_uses_them_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[dict[str, Any]] = []

    class FakeWorker:
        label = "worker"

        def __init__(self, cmd: list[str]) -> None:
            assert cmd[-1].endswith("_edgekit_worker.py")

        def ask(self, **req: Any) -> dict[str, Any]:
            asked.append(req)
            return {"tokens": [1] * bench.NEW_TOKENS, "decode_seconds": 0.5, "prefill_seconds": 0.05}

        def close(self) -> None:
            asked.append({"cmd": "quit"})

    monkeypatch.setattr(bench, "Worker", FakeWorker)
    peer = bench.worker_peer(bench.EDGEKIT_PROC, bench.Path("/pkg"), 2, [1, 2], "own process", sessions=2)
    assert [(r["cmd"], r["name"]) for r in asked] == [
        ("load", bench.EDGEKIT_PROC),
        ("load", f"{bench.EDGEKIT_PROC}#1"),
        ("run", f"{bench.EDGEKIT_PROC}#1"),  # the second session's warm-up
    ]
    assert all(r["threads"] == 2 and r["package"] == "/pkg" for r in asked if r["cmd"] == "load")
    assert not peer.diagnostic  # a target's peer, not a diagnostic row
    asked.clear()
    peer.run()
    peer.run()
    assert [r["name"] for r in asked] == [bench.EDGEKIT_PROC, f"{bench.EDGEKIT_PROC}#1"]
    assert peer.close is not None
    peer.close()
    assert asked[-1] == {"cmd": "quit"}


def test_each_target_compares_the_edgekit_peer_that_runs_in_the_peers_kind_of_process() -> None:
    """genai runs in a worker process, so its target takes the edgekit package in a worker process; optimum and
    PyTorch share the benchmark's process with the in-process edgekit peer, which their targets take."""
    ratios = {
        bench.EDGEKIT: {bench.OPTIMUM: 15.0, bench.PYTORCH: 25.0, bench.GENAI: 0.93, bench.EDGEKIT_PROC: 0.92},
        bench.EDGEKIT_PROC: {bench.OPTIMUM: 16.0, bench.PYTORCH: 27.0, bench.GENAI: 1.04, bench.EDGEKIT: 1.08},
    }
    targets = bench._targets("tiny", "int4", ratios)
    got = {(t["edgekit"], t["peer"]): (t["ratio"], t["pass"]) for t in targets}
    assert got == {
        (bench.EDGEKIT, bench.OPTIMUM): (15.0, True),
        (bench.EDGEKIT, bench.PYTORCH): (25.0, True),
        (bench.EDGEKIT_PROC, bench.GENAI): (1.04, True),
    }
    ratios[bench.EDGEKIT_PROC][bench.GENAI] = 0.97
    (genai,) = [t for t in bench._targets("32m", "int4", ratios) if t["peer"] == bench.GENAI]
    assert genai["edgekit"] == bench.EDGEKIT_PROC and genai["pass"] is False
    # without the genai peer (--no-genai) its target is there, unmeasured
    del ratios[bench.EDGEKIT_PROC]
    (genai,) = [t for t in bench._targets("32m", "int4", ratios) if t["peer"] == bench.GENAI]
    assert genai["ratio"] is None and genai["pass"] is None
