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
    GET  /health                         no auth: for readiness probes
    GET  /metrics                        Prometheus text (auth when keys are configured)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from edgekit.client import PermissionDeniedError, ServerBusyError
from edgekit.errors import ConfigError, EdgekitError
from edgekit.registry import Registry
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
    choice: Callable[[str, str], dict[str, Any]]
    delta: Callable[[str | None, str | None], dict[str, Any]]  # (text, finish_reason) -> a chunk's choice
    first_delta: dict[str, Any] | None = None  # sent before any text (chat announces the role)


def _text_choice(text: str, finish: str) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def _text_delta(text: str | None, finish: str | None) -> dict[str, Any]:
    return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}


def _chat_choice(text: str, finish: str) -> dict[str, Any]:
    return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}


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
ROUTES = [p for p, _ in ENDPOINT_METHODS] + ["/v1/models", "/health", "/metrics"]


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


def _record(request: Request) -> RequestRecord:
    return request.scope["edgekit"]


class Accounting:
    """Pure ASGI middleware (no body buffering, so streams and disconnects pass through untouched)."""

    def __init__(self, app: Any, *, state: ServerState) -> None:
        self.app = app
        self.state = state

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
            await self.app(scope, receive, tracked_send)
        except Exception:
            # A bug, not a client's doing: log it in full, answer without leaking its text.
            log.exception(
                "internal error on %s %s (request %s)", scope.get("method"), scope.get("path"), record.request_id
            )
            record.error = errors.InternalError.code
            if not started:
                status = 500
                exc = errors.InternalError(
                    "the server failed on this request; it is logged", hint=f"request id {record.request_id}"
                )
                body = errors.error_json(exc)
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                try:
                    await tracked_send({"type": "http.response.start", "status": 500, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                except OSError:
                    pass  # the client is gone too
        finally:
            path = scope.get("path", "")
            self.state.finish(
                route=path if path in ROUTES else "other",
                method=scope.get("method", ""),
                client=(scope.get("client") or ("", 0))[0],
                status=status,
                seconds=time.perf_counter() - start,
                record=record,
            )


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
        self, *, route: str, method: str, client: str, status: int, seconds: float, record: RequestRecord
    ) -> None:
        self.metrics.observe_request(route, status, seconds)
        if record.model and (record.prompt_tokens or record.completion_tokens):
            self.metrics.add_tokens(record.model, record.prompt_tokens, record.completion_tokens)
        if self.audit is not None and route != "other" and route not in ("/health", "/metrics"):
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
        path = request.url.path
        if key is not None and model_id is not None and model_id in self.models.ids() and not key.allows(model_id):
            raise PermissionDeniedError(
                f"the API key {key.id!r} may not use the model {model_id!r}",
                hint=f"this key may use: {', '.join(self.visible(key)) or 'no models'}",
                param="model",
            )
        served = self.models.resolve(model_id, method=method, endpoint=path, visible=self.visible(key))
        _record(request).model = served.id
        return served

    async def body(self, request: Request) -> dict[str, Any]:
        raw = await read_body(request.stream(), request.headers.get("content-length"), self.config.max_body_bytes)
        return parse_json(raw)

    async def start(self, key: KeyRecord | None, served: ServedModel, work: Any, deadline: Deadline) -> Job:
        if key is not None:
            self.quota.take(key)
        try:
            return await self.slots[served.id].start(work, deadline)
        except ServerBusyError:
            if key is not None:
                self.quota.refund(key)  # a request the server could not take does not count
            raise


async def _await_job(job: Job, request: Request, deadline: Deadline) -> Any:
    """The job's result, unless the client disconnects first (the job is cancelled) or the deadline passes."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({job.future, watcher}, timeout=deadline.remaining(), return_when="FIRST_COMPLETED")
    except asyncio.CancelledError:
        job.cancel.set()
        raise
    finally:
        watcher.cancel()
    if job.future in done:
        return job.future.result()
    job.cancel.set()
    if watcher in done:
        _record(request).cancelled = True
        raise errors.ClientGone()
    return await job.result(Deadline.after(0))  # raises the timeout error


# ------------------------------------------------------------------------------------ the app


def create_app(models: Mapping[str, Any] | Sequence[Any], config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving ``models`` (``{id: model}``, or models named by their manifests)."""
    config = config or ServerConfig()
    if not isinstance(config, ServerConfig):
        raise ConfigError(f"config must be a ServerConfig (got {type(config).__name__})")
    state = ServerState(ModelTable(models), config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.shutdown()

    app = FastAPI(
        title="edgekit", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan, **_no_telemetry()
    )
    app.state.edgekit = state
    errors.install(app, ROUTES)
    app.add_middleware(Accounting, state=state)

    for shape in GENERATION_SHAPES:
        app.add_api_route(shape.path, _generation_handler(state, shape), methods=["POST"])

    async def embeddings(request: Request) -> Response:
        deadline = Deadline.after(config.timeout_s)
        key = await state.authenticate(request)
        req = EmbeddingRequest.from_dict(await state.body(request), max_inputs=config.max_batch_inputs)
        served = state.resolve(request, key, req.model, "embed")
        texts = list(req.input)
        _record(request).content = {"input": texts}

        def work(cancel: Any, emit: Any) -> tuple[Any, int]:
            return served.model.embed(texts), served.count_tokens(texts)

        job = await state.start(key, served, work, deadline)
        vectors, n_tokens = await _await_job(job, request, deadline)
        _record(request).prompt_tokens = n_tokens
        data = [
            {"object": "embedding", "index": i, "embedding": encode_embedding(v, req.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        return JSONResponse({"object": "list", "data": data, "model": served.id, "usage": usage})

    async def classify(request: Request) -> Response:
        deadline = Deadline.after(config.timeout_s)
        key = await state.authenticate(request)
        req = ClassifyRequest.from_dict(await state.body(request))
        served = state.resolve(request, key, req.model, "classify")
        _, items = req.items(served.task, config.max_batch_inputs)
        texts = [i for i in items if isinstance(i, str)]
        if texts:
            _record(request).content = {"input": texts}
        options = {"sampling_rate": req.sampling_rate} if req.sampling_rate is not None else {}

        def work(cancel: Any, emit: Any) -> tuple[Any, int]:
            return served.model.classify(items, top_k=req.top_k, **options), served.count_tokens(texts)

        job = await state.start(key, served, work, deadline)
        ranked, n_tokens = await _await_job(job, request, deadline)
        _record(request).prompt_tokens = n_tokens
        data = [{"index": i, "labels": labels} for i, labels in enumerate(ranked)]
        _record(request).content["output"] = [d["labels"][0]["label"] for d in data if d["labels"]]
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        return JSONResponse({"object": "list", "data": data, "model": served.id, "usage": usage})

    async def list_models(request: Request) -> Response:
        key = await state.authenticate(request)
        data = []
        for mid in state.visible(key):
            m = state.models.models[mid]
            data.append(
                {
                    "id": m.id,
                    "object": "model",
                    "created": m.created,
                    "owned_by": "edgekit",
                    "task": m.task,
                    "endpoints": m.endpoints(ENDPOINT_METHODS),
                    "context_window": m.context_window,
                    "max_tokens_limit": m.max_tokens_limit(config.max_tokens_limit) if m.supports("stream") else None,
                }
            )
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "models": state.models.ids(),
                "uptime_seconds": round(time.time() - state.started_at, 3),
                "auth": config.auth_enabled,
            }
        )

    async def metrics(request: Request) -> Response:
        await state.authenticate(request)
        return PlainTextResponse(state.metrics.render(state.gauges), media_type="text/plain; version=0.0.4")

    app.add_api_route("/v1/embeddings", embeddings, methods=["POST"])
    app.add_api_route("/v1/classify", classify, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    return app


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
        req = shape.parse(await state.body(request))
        served = state.resolve(request, key, req.model, "stream")
        gen = _bounded(served, req, config.max_tokens_limit)
        prompt: Any
        if req.messages is not None:
            prompt = served.encode_chat(served.require_chat().render(req.messages))
            record.content = {"messages": [m.to_dict() for m in req.messages]}
        else:
            prompt = req.prompt if isinstance(req.prompt, str) else list(req.prompt or ())
            record.content = {"prompt": req.prompt}
        streaming = req.stream

        def work(cancel: Any, emit: Any) -> Any:
            # The runtime checks the flag between tokens: a timed-out or abandoned request frees its slot at once.
            if not streaming:
                return served.model.generate(prompt, gen, cancel=cancel)
            stream = served.model.stream(prompt, gen, cancel=cancel)  # a bad prompt raises here, before any answer
            emit(_READY)
            for delta in stream:
                emit(delta)
            return stream.result

        job = await state.start(key, served, work, deadline)
        ident = f"{shape.id_prefix}{record.request_id}"
        created = int(time.time())
        if not streaming:
            result = await _await_job(job, request, deadline)
            _count(record, result)
            record.content["output"] = result.text
            return JSONResponse(
                {
                    "id": ident,
                    "object": shape.object,
                    "created": created,
                    "model": served.id,
                    "choices": [shape.choice(result.text, result.finish_reason)],
                    "usage": result.usage.to_dict(),
                }
            )
        # Wait for the worker to accept the prompt, so a bad one is still a plain 4xx answer.
        kind, item = await job.next_event(deadline)
        if kind == "end":
            item.result()  # raises the worker's error
        chunks = _sse(state, shape, job, record, deadline, ident=ident, created=created, model=served.id, req=req)
        return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    handler.__name__ = "generate_" + shape.path.strip("/").replace("/", "_")
    return handler


def _bounded(served: ServedModel, req: GenerationRequest, server_limit: int) -> Any:
    from edgekit.errors import ConfigError

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
        record.error = errors.InternalError.code
        ended = True
        yield f"data: {errors.error_json(errors.InternalError('the server failed during this stream')).decode()}\n\n"
    finally:
        if not ended:  # the client went away (or the server is being forced down): stop generating
            job.cancel.set()
            record.cancelled = True
