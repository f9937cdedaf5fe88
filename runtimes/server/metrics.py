"""Prometheus metrics in the text exposition format (0.0.4), written by hand: no client library on the device.

    edgekit_requests_total{route, status}              counter
    edgekit_request_duration_seconds{route}            histogram (until the last byte, streams included)
    edgekit_tokens_total{model, direction="in"|"out"}  counter: prompt and completion tokens
    edgekit_queue_depth{model}                         gauge: requests waiting for a slot
    edgekit_requests_running{model}                    gauge: requests holding a slot
    edgekit_uptime_seconds                             gauge

Routes are the server's route paths; any other path counts as ``route="other"``, so a client probing random
URLs cannot grow the label set. Updates come from the event loop, reads from the ``/metrics`` handler on the
same loop; the lock only guards against use from other threads (tests, embedding the server).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

# Seconds: from a cached embedding (ms) to a long generation on a small CPU (a minute).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = {}
        self._hist_sum: dict[str, float] = defaultdict(float)
        self._hist_count: dict[str, int] = defaultdict(int)
        self._tokens: dict[tuple[str, str], int] = defaultdict(int)
        self._started = time.monotonic()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, str(status))] += 1
            counts = self._hist.setdefault(route, [0] * len(BUCKETS))
            i = bisect.bisect_left(BUCKETS, seconds)
            if i < len(BUCKETS):
                counts[i] += 1  # per-bucket counts; made cumulative when rendered
            self._hist_sum[route] += seconds
            self._hist_count[route] += 1

    def add_tokens(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._tokens[(model, "in")] += int(prompt_tokens)
            self._tokens[(model, "out")] += int(completion_tokens)

    def requests_total(self) -> int:
        with self._lock:
            return sum(self._requests.values())

    def render(self, gauges: Callable[[], dict[str, tuple[int, int]]]) -> str:
        """The exposition text; ``gauges()`` gives ``{model: (queued, running)}`` at this moment."""
        out: list[str] = []
        with self._lock:
            out += [
                "# HELP edgekit_requests_total HTTP requests by route and status code.",
                "# TYPE edgekit_requests_total counter",
            ]
            for (route, status), n in sorted(self._requests.items()):
                out.append(f"edgekit_requests_total{_labels([('route', route), ('status', status)])} {n}")
            out += [
                "# HELP edgekit_request_duration_seconds Time from the request to the last byte of the response.",
                "# TYPE edgekit_request_duration_seconds histogram",
            ]
            for route in sorted(self._hist):
                cumulative = 0
                for le, n in zip(BUCKETS, self._hist[route], strict=True):
                    cumulative += n
                    out.append(
                        f"edgekit_request_duration_seconds_bucket{_labels([('route', route), ('le', _num(le))])}"
                        f" {cumulative}"
                    )
                label = _labels([("route", route)])
                count = self._hist_count[route]
                out.append(
                    f"edgekit_request_duration_seconds_bucket{_labels([('route', route), ('le', '+Inf')])} {count}"
                )
                out.append(f"edgekit_request_duration_seconds_sum{label} {self._hist_sum[route]!r}")
                out.append(f"edgekit_request_duration_seconds_count{label} {count}")
            out += [
                "# HELP edgekit_tokens_total Tokens processed: in = prompt / input tokens, out = generated tokens.",
                "# TYPE edgekit_tokens_total counter",
            ]
            for (model, direction), n in sorted(self._tokens.items()):
                out.append(f"edgekit_tokens_total{_labels([('model', model), ('direction', direction)])} {n}")
        now = gauges()
        out += ["# HELP edgekit_queue_depth Requests waiting for a model slot.", "# TYPE edgekit_queue_depth gauge"]
        out += [f"edgekit_queue_depth{_labels([('model', m)])} {q}" for m, (q, _) in sorted(now.items())]
        out += [
            "# HELP edgekit_requests_running Requests holding a model slot.",
            "# TYPE edgekit_requests_running gauge",
        ]
        out += [f"edgekit_requests_running{_labels([('model', m)])} {r}" for m, (_, r) in sorted(now.items())]
        out += [
            "# HELP edgekit_uptime_seconds Seconds since the server started.",
            "# TYPE edgekit_uptime_seconds gauge",
            f"edgekit_uptime_seconds {time.monotonic() - self._started:.3f}",
        ]
        return "\n".join(out) + "\n"
