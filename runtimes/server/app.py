"""The FastAPI app: ``create_app(models, config)``.

A request goes: accounting middleware (request id, latency, metrics, audit line; the 500 boundary) → route →
authenticate (401) → read the body (413, 400) → validate (400) → resolve the model (404, 400 wrong task,
403 not allowed) → quota (429) → a model slot (503 when the queue is full) → the model call in the model's
worker thread, bounded by the request deadline (504) and cancelled if the client goes away.

The endpoints, by the model method they need::

    POST /v1/generate          stream    DeepSeek's completion shape: {"choices": [{"text", "index",
                                         "finish_reason", "logprobs"}], "usage": {...}}
    POST /v1/completions       stream    OpenAI completions; "stream": true → server-sent events
    POST /v1/chat/completions  stream    OpenAI chat, through the package's chat template
    POST /v1/embeddings        embed     OpenAI embeddings (float or base64)
    POST /v1/classify          classify  {"data": [{"index", "labels": [{"label", "score", "index"}]}]}
    GET  /v1/models                      the models this key may use, with task and endpoints
    GET  /v1/models/{id}                 one of them (404 for a model this key may not see)
    GET  /health                         no auth: for readiness probes; "degraded" with the problems
    GET  /metrics                        Prometheus text (auth when keys are configured)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from edgekit.errors import (
    ConfigError,
    EdgekitError,
    HeadersTooLargeError,
    ModelNotFoundError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
)
from edgekit.registry import Registry, unknown_message
from runtimes.server import errors
from runtimes.server.audit import AuditLog
from runtimes.server.auth import KeyRecord, KeyStore, QuotaTracker, parse_bearer
from runtimes.server.config import ServerConfig
from runtimes.server.limits import Deadline, Job, ModelSlots
from runtimes.server.metrics import Metrics
from runtimes.server.requests import (
    ClassifyRequest,
    EmbeddingRequest,
    GenerationRequest,
    encode_embedding,
    parse_json,
    read_body,
)
from runtimes.server.served import ModelTable, ServedModel

log = logging.getLogger("edgekit.server")

_READY = object()  # the worker accepted the prompt: from here on, errors arrive inside the stream


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------------ response shapes


@dataclass(frozen=True, kw_only=True)
class GenerationShape:
    """How one generation endpoint reads its request and writes its answer and stream chunks."""

    path: str
    object: str
    chunk_object: str
    id_prefix: str
    parse: Callable[[Mapping[str, Any]], GenerationRequest]
    choice: Callable[[str, str, int], dict[str, Any]]  # (text, finish_reason, index) -> a choice
    delta: Callable[[str | None, str | None], dict[str, Any]]  # (text, finish_reason) -> a chunk's choice
    first_delta: dict[str, Any] | None = None  # sent before any text (chat announces the role)


def _text_choice(text: str, finish: str, index: int) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def _text_delta(text: str | None, finish: str | None) -> dict[str, Any]:
    return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}


def _chat_choice(text: str, finish: str, index: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def _chat_delta(text: str | None, finish: str | None) -> dict[str, Any]:
    return {
        "index": 0,
        "delta": {"content": text} if text is not None else {},
        "logprobs": None,
        "finish_reason": finish,
    }


GENERATION_SHAPES: Registry[GenerationShape] = Registry("generation endpoint")
for _shape in (
    GenerationShape(
        path="/v1/generate",
        object="text_completion",
        chunk_object="text_completion",
        id_prefix="gen-",
        parse=GenerationRequest.completion,
        choice=_text_choice,
        delta=_text_delta,
    ),
    GenerationShape(
        path="/v1/completions",
        object="text_completion",
        chunk_object="text_completion",
        id_prefix="cmpl-",
        parse=GenerationRequest.completion,
        choice=_text_choice,
        delta=_text_delta,
    ),
    GenerationShape(
        path="/v1/chat/completions",
        object="chat.completion",
        chunk_object="chat.completion.chunk",
        id_prefix="chatcmpl-",
        parse=GenerationRequest.chat,
        choice=_chat_choice,
        delta=_chat_delta,
        first_delta={
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        },
    ),
):
    GENERATION_SHAPES.add(_shape.path, _shape)
del _shape

# Which model method each model endpoint needs (for /v1/models and for picking the default model).
ENDPOINT_METHODS = (
    ("/v1/generate", "stream"),
    ("/v1/completions", "stream"),
    ("/v1/chat/completions", "stream"),
    ("/v1/embeddings", "embed"),
    ("/v1/classify", "classify"),
)
ROUTES = [p for p, _ in ENDPOINT_METHODS] + ["/v1/models", "/v1/models/{id}", "/health", "/metrics"]
access_log = logging.getLogger("edgekit.server.access")  # one INFO line per request: shown with -v


# ------------------------------------------------------------------------------------ per-request record


@dataclass
class RequestRecord:
    """What a handler learned about its request, for the metrics and the audit line written at the end."""

    request_id: str
    key_id: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cancelled: bool = False
    content: dict[str, Any] = field(default_factory=dict)
    refund: Callable[[], None] | None = None  # gives back the quota charge, if the request turns out refused


def _record(request: Request) -> RequestRecord:
    return request.scope["edgekit"]


class Accounting:
    """Pure ASGI middleware (no body buffering, so streams and disconnects pass through untouched)."""

    def __init__(
        self,
        app: Any,
        *,
        state: ServerState,
        direct: Mapping[str, Callable[[Request], Any]] | None = None,
        on_error: Callable[[Request, Exception], Any] | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.direct = dict(direct or {}) if on_error is not None else {}  # POST path -> handler
        self.on_error = on_error
        self.handled = errors.handled()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id=uuid.uuid4().hex)
        scope["edgekit"] = record
        start = time.perf_counter()
        status = 500
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", record.request_id.encode())]
            await send(message)

        try:
            _check_headers(scope)
            handler = self.direct.get(scope.get("path", "")) if scope.get("method") == "POST" else None
            if handler is not None and not scope.get("root_path"):
                await self._direct(handler, scope, receive, tracked_send)
            else:
                await self.app(scope, receive, tracked_send)
        except Exception as exc:
            # Past the error handlers: a bug, or a library's exception raised while streaming. The one
            # translation table in errors.py decides; unforeseen ones are logged in full and answered without
            # their text.
            err = errors.translate(exc, scope)
            errors.settle(scope, err)
            if not started and not record.cancelled:
                status = int(err.http_status)
                body = errors.error_json(err)
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                try:
                    await tracked_send({"type": "http.response.start", "status": err.http_status, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                except OSError:
                    pass  # the client is gone too
        finally:
            if record.cancelled:
                status = 499  # the client went away first: not a server error, whatever was sent before
            path = scope.get("path", "")
            self.state.finish(
                route=route_label(path),
                path=path,
                method=scope.get("method", ""),
                client=(scope.get("client") or ("", 0))[0],
                status=status,
                seconds=time.perf_counter() - start,
                record=record,
            )

    async def _direct(self, handler: Callable[[Request], Any], scope: Any, receive: Any, send: Any) -> None:
        """A model endpoint's POST without the layers between here and its route (exception middleware, exit
        stack, route matching, request wrapper): forty microseconds a request, where the model's fixed cost is
        a millisecond. What those layers do for it is done here the same way: the errors the app has a
        handler for get that handler's answer (an error after the answer started is the 500 boundary's), the
        rest go up to the boundary. Other methods on these paths take the router's way (405 with Allow)."""
        request = Request(scope, receive, send)
        started = False

        async def sender(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            response = await handler(request)
            await response(scope, receive, sender)
        except self.handled as exc:
            if started:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            response = await self.on_error(request, exc)  # type: ignore[misc]
            await response(scope, receive, sender)
            exc.__traceback__ = None  # as Starlette does: a reused exception must not grow its traceback


MAX_HEADER_BYTES = 32 * 1024  # request line and headers together; h11's own limit binds only on partial reads


def _check_headers(scope: dict[str, Any]) -> None:
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLargeError(
            f"the request line and headers are {size} bytes, more than this server's {MAX_HEADER_BYTES}",
            hint="send shorter headers (an API key is under 100 bytes)",
        )


def _printable(path: str, limit: int = 200) -> str:
    """A client's path as one safe log token: no control characters or quotes, bounded length."""
    safe = "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}" for c in path[:limit])
    return safe + ("..." if len(path) > limit else "")


def route_label(path: str) -> str:
    """The route a path belongs to, for metrics labels: unknown paths are one label, not one each."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/") and path.count("/") == 3:
        return "/v1/models/{id}"
    return "other"


# ------------------------------------------------------------------------------------ server state


class ServerState:
    def __init__(self, models: ModelTable, config: ServerConfig) -> None:
        self.config = config
        self.models = models
        self.keys = KeyStore.load(config.api_keys_file) if config.api_keys_file else None
        self.quota = QuotaTracker()
        self.metrics = Metrics()
        self.audit = AuditLog(config.audit_log, log_content=config.log_content) if config.audit_log else None
        self.slots = {
            m.id: ModelSlots(m.id, max_concurrency=config.max_concurrency, queue=config.queue) for m in models
        }
        self.started_at = time.time()
        self._hashing = asyncio.Semaphore(1)  # one scrypt at a time, whatever the number of bad keys

    def finish(
        self, *, route: str, path: str, method: str, client: str, status: int, seconds: float, record: RequestRecord
    ) -> None:
        self.metrics.observe_request(route, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s "%s %s" %d %.1f ms model=%s key=%s error=%s request=%s',
                client or "-",
                method,
                _printable(path),
                status,
                seconds * 1000,
                record.model or "-",
                record.key_id or "-",
                record.error or "-",
                record.request_id,
            )
        if record.model and (record.prompt_tokens or record.completion_tokens):
            self.metrics.add_tokens(record.model, record.prompt_tokens, record.completion_tokens)
        if self.audit is not None and route not in ("other", "/health", "/metrics"):
            self.audit.write(
                {
                    "request_id": record.request_id,
                    "key_id": record.key_id,
                    "client": client,
                    "method": method,
                    "route": route,
                    "model": record.model,
                    "status": status,
                    "prompt_tokens": record.prompt_tokens,
                    "completion_tokens": record.completion_tokens,
                    "latency_ms": round(seconds * 1000, 2),
                    "error": record.error,
                    "cancelled": record.cancelled,
                },
                record.content,
            )

    def problems(self) -> list[str]:
        """What makes this server degraded (for /health): it still answers, but something it promised fails."""
        found = []
        if self.audit is not None and self.audit.failure:
            found.append(f"audit log: {self.audit.failure}")
        return found

    def gauges(self) -> dict[str, tuple[int, int]]:
        return {mid: (s.queued, s.running) for mid, s in self.slots.items()}

    async def shutdown(self) -> None:
        for slots in self.slots.values():
            await asyncio.to_thread(slots.shutdown)
        if self.audit is not None:
            self.audit.close()

    # --- the gate ------------------------------------------------------------------------------------

    async def authenticate(self, request: Request) -> KeyRecord | None:
        if self.keys is None:
            return None
        token = parse_bearer(request.headers.get("authorization"))
        record = self.keys.cached(token)
        if record is None:
            async with self._hashing:
                record = await asyncio.to_thread(self.keys.verify, token)
        _record(request).key_id = record.id
        return record

    def visible(self, key: KeyRecord | None) -> list[str]:
        return [i for i in self.models.ids() if key is None or key.allows(i)]

    def resolve(self, request: Request, key: KeyRecord | None, model_id: str | None, method: str) -> ServedModel:
        path = request.scope["path"]  # a matched route's path, as request.url.path (without building a URL)
        if key is not None and model_id is not None and model_id in self.models.ids() and not key.allows(model_id):
            raise PermissionDeniedError(
                f"the API key {key.id!r} may not use the model {model_id!r}",
                hint=f"this key may use: {', '.join(self.visible(key)) or 'no models'}",
                param="model",
            )
        served = self.models.resolve(model_id, method=method, endpoint=path, visible=self.visible(key))
        _record(request).model = served.id
        return served

    async def body(self, request: Request, deadline: Deadline) -> dict[str, Any]:
        _require_json(request.headers.get("content-type"))
        timeout = min(self.config.read_timeout_s, deadline.remaining())
        length = request.headers.get("content-length")
        raw = await read_body(request.stream(), length, self.config.max_body_bytes, timeout)
        return parse_json(raw)

    async def start(
        self, request: Request, key: KeyRecord | None, served: ServedModel, work: Any, deadline: Deadline
    ) -> Job:
        """Charge the key's quota and start the work. The charge is given back by the error handler
        (``errors.settle``) if the request is then refused with a status the client is not to pay for:
        503 when the queue is full, 400 when the model refuses the prompt (too long for its context, ...)."""
        if key is not None:
            self.quota.take(key)
            _record(request).refund = lambda: self.quota.refund(key)
        return await self.slots[served.id].start(work, deadline)


def _require_json(content_type: str | None) -> None:
    """A body that says it is something other than JSON is refused: it was sent to the wrong server or route.
    No Content-Type at all is accepted, as curl -d without -H sends a form type that many clients leave."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/json", "application/x-www-form-urlencoded", "text/plain", "") or media.endswith("+json"):
        return
    raise UnsupportedMediaTypeError(
        f"the request body must be JSON (Content-Type: application/json), not {media[:100]}",
        hint="send the body as JSON with the header 'Content-Type: application/json'",
    )


async def _await_job(job: Job, request: Request, deadline: Deadline) -> Any:
    """The job's result, unless the client disconnects first (the job is cancelled) or the deadline passes."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] = loop.create_future()

    def wake_up(*_: Any) -> None:
        if not wake.done():
            wake.set_result(None)

    # The first of: the job's end, the client's disconnect, the deadline (as asyncio.wait would, with a step less).
    watcher = asyncio.ensure_future(disconnected())
    watcher.add_done_callback(wake_up)
    timer = loop.call_later(deadline.remaining(), wake_up)
    job.on_end(wake_up)
    try:
        await wake
    except asyncio.CancelledError:
        job.cancel.set()
        raise
    finally:
        timer.cancel()
        watcher.cancel()
    if job.future.done():
        return job.future.result()
    job.cancel.set()
    if watcher.done():  # it ended by itself (cancel() above does not end a task at once)
        _record(request).cancelled = True
        raise errors.client_gone()
    return await job.result(Deadline.after(0))  # raises the timeout error


# ------------------------------------------------------------------------------------ the app


def create_app(models: Mapping[str, Any] | Sequence[Any], config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving ``models`` (``{id: model}``, or models named by their package folders)."""
    config = config or ServerConfig()
    if not isinstance(config, ServerConfig):
        raise ConfigError(f"config must be a ServerConfig (got {type(config).__name__})")
    state = ServerState(ModelTable(models), config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.shutdown()

    app = FastAPI(
        title="edgekit",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        default_response_class=FiniteJSONResponse,
        **_no_telemetry(),
    )
    app.state.edgekit = state
    on_error = errors.install(app, ROUTES)
    # The model endpoints are plain Starlette routes (each handler takes the Request and returns its Response:
    # FastAPI's per-request dependency solving has nothing to do but costs tens of microseconds a call), and
    # their POSTs are served by the accounting middleware directly (see Accounting._direct).
    direct: dict[str, Callable[[Request], Any]] = {s.path: _generation_handler(state, s) for s in GENERATION_SHAPES}
    direct["/v1/embeddings"] = _embeddings_handler(state)
    direct["/v1/classify"] = _classify_handler(state)
    for path, handler in direct.items():
        app.add_route(path, handler, methods=["POST"])
    app.add_middleware(Accounting, state=state, direct=direct, on_error=on_error)
    list_models, get_model = _model_handlers(state)
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])

    async def health(request: Request) -> Response:
        problems = state.problems()
        return FiniteJSONResponse(
            {
                "status": "degraded" if problems else "ok",
                "problems": problems,
                "models": state.models.ids(),
                "uptime_seconds": round(time.time() - state.started_at, 3),
                "auth": config.auth_enabled,
            }
        )

    async def metrics(request: Request) -> Response:
        await state.authenticate(request)
        return PlainTextResponse(state.metrics.render(state.gauges), media_type="text/plain; version=0.0.4")

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    return app


class FiniteJSONResponse(JSONResponse):
    """JSON that is JSON: a non-finite float (a model's NaN score) is written as null, never as ``NaN``."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:  # only when something is not finite: the slow path, rare
            text = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _embeddings_handler(state: ServerState) -> Callable[[Request], Any]:
    config = state.config

    async def embeddings(request: Request) -> Response:
        deadline = Deadline.after(config.timeout_s)
        key = await state.authenticate(request)
        req = EmbeddingRequest.from_dict(await state.body(request, deadline), max_inputs=config.max_batch_inputs)
        served = state.resolve(request, key, req.model, "embed")
        texts = list(req.input)
        _record(request).content = {"input": texts}

        def work(cancel: Any, emit: Any) -> tuple[Any, int]:
            return served.model.embed(texts), served.count_tokens(texts)

        job = await state.start(request, key, served, work, deadline)
        vectors, n_tokens = await _await_job(job, request, deadline)
        _record(request).prompt_tokens = n_tokens
        data = [
            {"object": "embedding", "index": i, "embedding": encode_embedding(v, req.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        return FiniteJSONResponse({"object": "list", "data": data, "model": served.id, "usage": usage})

    return embeddings


def _classify_handler(state: ServerState) -> Callable[[Request], Any]:
    config = state.config

    async def classify(request: Request) -> Response:
        deadline = Deadline.after(config.timeout_s)
        key = await state.authenticate(request)
        req = ClassifyRequest.from_dict(await state.body(request, deadline))
        served = state.resolve(request, key, req.model, "classify")
        _, items = req.items(served.task, config.max_batch_inputs)
        texts = [i for i in items if isinstance(i, str)]
        if texts:
            _record(request).content = {"input": texts}
        options = {"sampling_rate": req.sampling_rate} if req.sampling_rate is not None else {}

        def work(cancel: Any, emit: Any) -> tuple[Any, int]:
            return served.model.classify(items, top_k=req.top_k, **options), served.count_tokens(texts)

        job = await state.start(request, key, served, work, deadline)
        ranked, n_tokens = await _await_job(job, request, deadline)
        _record(request).prompt_tokens = n_tokens
        data = [{"index": i, "labels": labels} for i, labels in enumerate(ranked)]
        _record(request).content["output"] = [d["labels"][0]["label"] for d in data if d["labels"]]
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        return FiniteJSONResponse({"object": "list", "data": data, "model": served.id, "usage": usage})

    return classify


def _model_handlers(state: ServerState) -> tuple[Callable[[Request], Any], Callable[[Request], Any]]:
    def card(mid: str) -> dict[str, Any]:
        m = state.models.models[mid]
        return {
            "id": m.id,
            "object": "model",
            "created": m.created,
            "owned_by": "edgekit",
            "task": m.task,
            "endpoints": m.endpoints(ENDPOINT_METHODS),
            "context_window": m.context_window,
            "max_tokens_limit": m.max_tokens_limit(state.config.max_tokens_limit) if m.supports("stream") else None,
        }

    async def list_models(request: Request) -> Response:
        key = await state.authenticate(request)
        return FiniteJSONResponse({"object": "list", "data": [card(mid) for mid in state.visible(key)]})

    async def get_model(request: Request) -> Response:
        """OpenAI's ``GET /v1/models/{id}``: a model this key may not use is as unknown as a missing one."""
        key = await state.authenticate(request)
        model_id = request.path_params["model_id"]
        visible = state.visible(key)
        if model_id not in visible:
            raise ModelNotFoundError(unknown_message("model", model_id, visible), param="model")
        return FiniteJSONResponse(card(model_id))

    return list_models, get_model


def _no_telemetry() -> dict[str, Any]:
    """Newer FastAPI has OpenTelemetry built in, exporting when the environment says so
    (FASTAPI_OTEL_AUTO_CONFIGURE + OTEL_EXPORTER_OTLP_ENDPOINT). Requests to this server are the user's data
    and must not leave the device through an environment variable: switch all of it off, where it exists."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}
    return {"telemetry": off}


def _generation_handler(state: ServerState, shape: GenerationShape) -> Callable[[Request], Any]:
    config = state.config

    async def handler(request: Request) -> Response:
        deadline = Deadline.after(config.timeout_s)
        record = _record(request)
        key = await state.authenticate(request)
        req = shape.parse(await state.body(request, deadline))
        served = state.resolve(request, key, req.model, "stream")
        gen = _bounded(served, req, config.max_tokens_limit)
        prompts = _prompts_of(served, req, record)
        if req.stream:
            return await _start_stream(state, shape, request, key, served, prompts[0], gen, req, deadline)
        configs = _choice_configs(gen, req.n)

        def work(cancel: Any, emit: Any) -> list[Any]:
            # One slot for the whole request, prompt-major; the runtime checks the flag between tokens, so a
            # timed-out or abandoned request frees its slot at once.
            results = []
            for prompt in prompts:
                for cfg in configs:
                    if cancel.is_set():
                        return results
                    results.append(served.model.generate(prompt, cfg, cancel=cancel))
            return results

        job = await state.start(request, key, served, work, deadline)
        results = await _await_job(job, request, deadline)
        usage = _usage(results, req.n)
        record.prompt_tokens, record.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
        record.content["output"] = [r.text for r in results] if len(results) > 1 else results[0].text
        return FiniteJSONResponse(
            {
                "id": f"{shape.id_prefix}{record.request_id}",
                "object": shape.object,
                "created": int(time.time()),
                "model": served.id,
                "choices": [shape.choice(r.text, r.finish_reason, i) for i, r in enumerate(results)],
                "usage": usage,
            }
        )

    handler.__name__ = "generate_" + shape.path.strip("/").replace("/", "_")
    return handler


def _prompts_of(served: ServedModel, req: GenerationRequest, record: RequestRecord) -> list[Any]:
    if req.messages is not None:
        record.content = {"messages": [m.to_dict() for m in req.messages]}
        return [served.encode_chat(served.require_chat().render(req.messages))]
    prompts = [p if isinstance(p, str) else list(p) for p in req.prompts]
    record.content = {"prompt": prompts[0] if len(prompts) == 1 else prompts}
    return prompts


def _choice_configs(gen: Any, n: int) -> list[Any]:
    """One config per choice: with a seed, choice ``j`` samples with ``seed + j`` so the choices differ but a
    repeated request gives the same ones; greedy choices are identical whatever the seed."""
    if n == 1 or gen.seed is None:
        return [gen] * n
    return [gen.replace(seed=(gen.seed + j) % 2**63) for j in range(n)]


def _usage(results: list[Any], n: int) -> dict[str, int]:
    # Each prompt counts once however many choices it had (as OpenAI's usage does).
    prompt = sum(int(r.usage.prompt_tokens) for r in results[::n])
    completion = sum(int(r.usage.completion_tokens) for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _start_stream(
    state: ServerState,
    shape: GenerationShape,
    request: Request,
    key: KeyRecord | None,
    served: ServedModel,
    prompt: Any,
    gen: Any,
    req: GenerationRequest,
    deadline: Deadline,
) -> Response:
    record = _record(request)

    def work(cancel: Any, emit: Any) -> Any:
        stream = served.model.stream(prompt, gen, cancel=cancel)  # a bad prompt raises here, before any answer
        emit(_READY)
        for delta in stream:
            emit(delta)
        return stream.result

    job = await state.start(request, key, served, work, deadline)
    # Wait for the worker to accept the prompt, so a bad one is still a plain 4xx answer.
    kind, item = await job.next_event(deadline)
    if kind == "end":
        item.result()  # raises the worker's error
    ident = f"{shape.id_prefix}{record.request_id}"
    chunks = _sse(state, shape, job, record, deadline, ident=ident, created=int(time.time()), model=served.id, req=req)
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _bounded(served: ServedModel, req: GenerationRequest, server_limit: int) -> Any:
    limit = served.max_tokens_limit(server_limit)
    gen = req.generation
    if gen.max_tokens <= limit:
        return gen
    if not req.max_tokens_given:
        return gen.replace(max_tokens=limit)  # the default does not fit this model: use what does
    raise ConfigError(
        f"max_tokens must be between 1 and {limit} for the model {served.id!r} (got {gen.max_tokens})",
        hint="the limit is the model's context window minus one, capped by the server's max_tokens_limit",
        param="max_tokens",
    )


def _count(record: RequestRecord, result: Any) -> None:
    record.prompt_tokens = int(result.usage.prompt_tokens)
    record.completion_tokens = int(result.usage.completion_tokens)


async def _sse(
    state: ServerState,
    shape: GenerationShape,
    job: Job,
    record: RequestRecord,
    deadline: Deadline,
    *,
    ident: str,
    created: int,
    model: str,
    req: GenerationRequest,
) -> AsyncIterator[str]:
    def chunk(choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {"id": ident, "object": shape.chunk_object, "created": created, "model": model}
        body["choices"] = [choice] if choice is not None else []
        if usage is not None:
            body["usage"] = usage
        return f"data: {_dumps(body)}\n\n"

    ended = False
    parts: list[str] = []
    try:
        if shape.first_delta is not None:
            yield chunk(shape.first_delta)
        while True:
            kind, item = await job.next_event(deadline)
            if kind == "end":
                result = item.result()
                break
            parts.append(item)
            yield chunk(shape.delta(item, None))
        _count(record, result)
        record.content["output"] = "".join(parts)
        yield chunk(shape.delta(None, result.finish_reason))
        if req.include_usage:
            yield chunk(None, result.usage.to_dict())
        yield "data: [DONE]\n\n"
        ended = True
    except EdgekitError as exc:
        # The 200 is already sent: the error goes into the stream, as OpenAI's API does.
        record.error = exc.code
        ended = True
        yield f"data: {errors.error_json(exc).decode()}\n\n"
    except Exception:
        log.exception("internal error in a stream (request %s)", record.request_id)
        record.error = errors.ServerInternalError.code
        ended = True
        yield f"data: {errors.error_json(errors.ServerInternalError('the server failed during this stream')).decode()}\n\n"
    finally:
        if not ended:  # the client went away (or the server is being forced down): stop generating
            job.cancel.set()
            record.cancelled = True
