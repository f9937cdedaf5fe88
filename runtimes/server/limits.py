"""Load limits per model: bounded concurrency, a bounded FIFO queue, deadlines, and cancellable worker jobs.

Each model has ``max_concurrency`` slots and a queue of ``queue`` waiting requests. A request that finds the
slots taken and the queue full is refused at once with 503 and a Retry-After estimated from recent job times:
under overload, answering fast is kinder than letting requests pile up until they time out.

Model calls run in the model's own worker threads (ONNX Runtime releases the GIL), so the event loop keeps
serving health checks, metrics and other models meanwhile. A job holds its slot until its *thread* finishes,
not until the request stops waiting: a timed-out or abandoned generation is told to stop (``cancel``, checked
by the worker between tokens) but still uses the CPU until it does, and the next request must not start
beside it. All the bookkeeping runs on the event loop, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edgekit.errors import RequestTimeoutError, ServerBusyError

# Recent job durations are smoothed with this weight to estimate Retry-After.
_EWMA = 0.2
_MAX_RETRY_AFTER = 60


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


class Job:
    """One call running in a worker thread: ``future`` for its return value, ``events`` for what it emits."""

    def __init__(self, future: asyncio.Future[Any], cancel: threading.Event, events: asyncio.Queue[Any]) -> None:
        self.future = future
        self.cancel = cancel
        self.events = events
        self._on_end: list[Callable[[], None]] = []

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the loop when the job ends (at once if it has), in the step that ends it:
        a done callback of ``future`` would run one event-loop step later."""
        if self.future.done():
            callback()
        else:
            self._on_end.append(callback)

    def _ended(self) -> None:
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback()

    async def result(self, deadline: Deadline) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(self.future), deadline.remaining())
        except asyncio.TimeoutError:
            self.cancel.set()
            raise _timeout() from None
        except asyncio.CancelledError:
            self.cancel.set()
            raise

    async def next_event(self, deadline: Deadline) -> tuple[str, Any]:
        """``("event", item)`` for each item the worker emits, then ``("end", future)`` once it returned."""
        remaining = deadline.remaining()
        if remaining > 0 and not self.events.empty():  # tokens that queued while the loop was busy: no wait
            return self.events.get_nowait()  # type: ignore[no-any-return]
        try:
            if _TIMEOUT is not None:  # 3.11+: a timer, not wait_for's task (three loop steps per streamed token)
                async with _TIMEOUT(remaining):
                    return await self.events.get()  # type: ignore[no-any-return]
            return await asyncio.wait_for(self.events.get(), remaining)  # type: ignore[no-any-return]
        except asyncio.TimeoutError:
            self.cancel.set()
            raise _timeout() from None


_TIMEOUT = getattr(asyncio, "timeout", None)  # Python 3.11+


def _timeout() -> RequestTimeoutError:
    return RequestTimeoutError(
        "the request took longer than the server's timeout",
        hint="ask for fewer tokens (max_tokens), or start the server with a longer --timeout",
    )


class ModelSlots:
    def __init__(self, model_id: str, *, max_concurrency: int, queue: int) -> None:
        self.model_id = model_id
        self.max_concurrency = max_concurrency
        self.queue_size = queue
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=f"edgekit-{model_id}")
        self._job_seconds = 0.0  # smoothed duration of recent jobs

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, in job durations, shared by the slots."""
        ahead = (self.queued + 1) / self.max_concurrency
        return int(min(_MAX_RETRY_AFTER, max(1, math.ceil(ahead * self._job_seconds))))

    async def acquire(self, deadline: Deadline) -> None:
        if self.running < self.max_concurrency and not self._waiters:
            self.running += 1
            return
        if self.queued >= self.queue_size:
            raise ServerBusyError(
                f"the model {self.model_id!r} is busy: {self.running} requests running and {self.queued} waiting",
                retry_after=self.retry_after(),
                hint="retry after the Retry-After seconds; the operator can raise --queue or --max-concurrency",
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, deadline.remaining())
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                self._discard(waiter)
            if isinstance(exc, asyncio.TimeoutError):
                raise ServerBusyError(
                    f"the model {self.model_id!r} stayed busy for the whole timeout",
                    retry_after=self.retry_after(),
                    hint="retry later; the operator can raise --max-concurrency or --timeout",
                ) from None
            raise

    def release(self) -> None:
        # Hand the slot straight to the next waiter (FIFO), so a newcomer cannot overtake the queue.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    async def start(self, fn: Callable[[threading.Event, Callable[[Any], None]], Any], deadline: Deadline) -> Job:
        """Wait for a slot (503 when the queue is full or the deadline passes), then run ``fn`` in a worker.

        ``fn(cancel, emit)`` runs in the thread; it should return soon after ``cancel`` is set, and may call
        ``emit(item)`` to hand items to the event loop as it goes (streamed text).
        """
        await self.acquire(deadline)
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        events: asyncio.Queue[Any] = asyncio.Queue()
        job = Job(loop.create_future(), cancel, events)

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("event", item))

        started = time.monotonic()

        def finish(result: Any, error: BaseException | None) -> None:  # on the loop, once the thread is done
            seconds = time.monotonic() - started
            self._job_seconds = seconds if not self._job_seconds else (1 - _EWMA) * self._job_seconds + _EWMA * seconds
            self.release()
            future = job.future
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)
                    future.exception()  # mark it retrieved: a request that went away must not log "never retrieved"
            events.put_nowait(("end", future))
            job._ended()

        def run() -> None:  # in the worker thread
            # The outcome goes to the loop in one call (not run_in_executor's future chained to an asyncio
            # future, whose callbacks then take two more loop steps to reach the waiting request).
            try:
                outcome: tuple[Any, BaseException | None] = (fn(cancel, emit), None)
            except BaseException as exc:  # handed to the request, as run_in_executor would
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(finish, *outcome)

        try:
            self._executor.submit(run)
        except BaseException:
            self.release()
            raise
        return job

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
