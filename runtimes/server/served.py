"""The models a server serves: each loaded model with its id, what it can do, and its chat template.

A model is anything with ``task``, ``methods`` and the methods themselves (``stream``, ``embed``,
``classify``): a :class:`runtimes.Model`, or a stand-in in tests. Its id is the one it is served under
(``edgekit serve NAME=PKG``), else its package folder's name (``out/llm-int4`` serves ``llm-int4``): the folder
a user named, not the export source's name in the manifest, so two variants of one model never collide.
Which endpoints a model serves follows from its ``methods`` (the runtime's pipeline registry), never from
its task name.

Also here, until the runtime offers them (see the module notes in ``runtimes/server/__init__.py``): the
tokenizer for counting embedding / classification input tokens and for encoding rendered chat prompts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ChatTemplateError, ConfigError, InvalidRequestError, ModelNotFoundError, TaskMismatchError
from edgekit.registry import unknown_message
from runtimes.server.chat import ChatTemplate

log = logging.getLogger("edgekit.server")


@dataclass
class ServedModel:
    id: str
    model: Any
    task: str
    methods: frozenset[str]
    context_window: int | None
    created: int
    tokenizer: Any | None = None  # load_tokenizer: counts input tokens, encodes chat prompts
    chat: ChatTemplate | None = None
    chat_unavailable: str = ""  # why chat is unavailable, for the 400 answer

    @classmethod
    def wrap(cls, model_id: str, model: Any) -> ServedModel:
        manifest = getattr(model, "manifest", None)
        generation = getattr(manifest, "generation", None)
        served = cls(
            id=model_id,
            model=model,
            task=str(getattr(model, "task", "unknown")),
            methods=frozenset(getattr(model, "methods", ())),
            context_window=int(generation.max_context_tokens) if generation is not None else None,
            created=_created(manifest),
            tokenizer=_tokenizer(model, manifest),
        )
        served._load_chat_template(generation)
        return served

    def _load_chat_template(self, generation: Any) -> None:
        if "stream" not in self.methods:
            self.chat_unavailable = f"the model {self.id!r} is a {self.task} model, not a text-generation model"
            return
        source = getattr(generation, "chat_template", None)
        if not source:
            self.chat_unavailable = (
                f"the model {self.id!r} has no chat template (its tokenizer config had none when it was exported)"
            )
            return
        if self.tokenizer is None:
            self.chat_unavailable = f"the model {self.id!r} has no tokenizer file to encode chat prompts with"
            return
        try:
            from jinja2 import TemplateError
        except ImportError:
            self.chat_unavailable = "chat needs jinja2, which is not installed: pip install 'edgekit[serve]'"
        else:
            try:
                self.chat = ChatTemplate(
                    source, bos_token=self._token_text(generation.bos_token_id), eos_token=self._eos(generation)
                )
            except TemplateError as exc:
                self.chat_unavailable = f"the model {self.id!r} has a chat template that does not compile: {exc}"
        if self.chat is None:
            log.warning("%s: /v1/chat/completions unavailable: %s", self.id, self.chat_unavailable)

    def _token_text(self, token_id: int | None) -> str:
        if token_id is None or self.tokenizer is None:
            return ""
        return self.tokenizer.id_to_token(int(token_id)) or ""

    def _eos(self, generation: Any) -> str:
        ids = list(getattr(generation, "eos_token_ids", None) or [])
        return self._token_text(ids[0]) if ids else ""

    # --- what it can do ------------------------------------------------------------------------------

    def supports(self, method: str) -> bool:
        return method in self.methods

    def require(self, method: str, endpoint: str) -> None:
        if not self.supports(method):
            raise TaskMismatchError(
                f"the model {self.id!r} is a {self.task} model; {endpoint} needs a model with {method}()",
                hint="see GET /v1/models for each model's task and endpoints",
                param="model",
            )

    def require_chat(self) -> ChatTemplate:
        if self.chat is None:
            raise ChatTemplateError(
                f"/v1/chat/completions is not available for this model: {self.chat_unavailable}",
                hint="use /v1/completions with a prompt you format yourself, or export a model whose tokenizer"
                " config has a chat_template",
                param="model",
            )
        return self.chat

    def max_tokens_limit(self, server_limit: int) -> int:
        # At least one context position stays for the prompt.
        return max(1, min(server_limit, self.context_window - 1)) if self.context_window else server_limit

    def count_tokens(self, texts: Sequence[str]) -> int:
        if self.tokenizer is None or not texts:
            return 0
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(list(texts)))

    def encode_chat(self, text: str) -> list[int]:
        # The rendered template already holds BOS and the other special tokens: add none (as transformers does).
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[union-attr]

    def endpoints(self, table: Iterable[tuple[str, str]]) -> list[str]:
        return [
            path for path, method in table if self.supports(method) and (path != "/v1/chat/completions" or self.chat)
        ]


# --- a per-token cancel flag for generation, until the runtime takes one ------------------------------------


def _created(manifest: Any) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(str(manifest.created_at)).timestamp())
    except (AttributeError, ValueError, TypeError):
        return int(time.time())


def _tokenizer(model: Any, manifest: Any) -> Any | None:
    root = getattr(model, "root", None)
    if root is None or manifest is None:
        return None
    path = Path(root) / dict(manifest.preprocessing or {}).get("tokenizer_file", "tokenizer.json")
    if not path.is_file():
        return None
    from runtimes.wordpiece import load_tokenizer

    tok = load_tokenizer(path)  # the compact WordPiece where the file is one, as the pipelines load it
    max_length = dict(manifest.preprocessing or {}).get("max_length")
    if max_length:
        tok.enable_truncation(int(max_length))  # count what the model sees
    else:
        tok.no_truncation()
    tok.no_padding()
    return tok


class ModelTable:
    """The served models by id."""

    def __init__(self, models: Mapping[str, Any] | Sequence[Any]) -> None:
        pairs = list(models.items()) if isinstance(models, Mapping) else [(_model_id(m), m) for m in models]
        ids = [i for i, _ in pairs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(
                f"two models would be served as {dupes[0]!r}: model ids must be unique",
                hint=f"give them ids of their own: edgekit serve {dupes[0]}-a=PKG1 {dupes[0]}-b=PKG2"
                " (or --name for each package)",
                param="name",
            )
        if not pairs:
            raise ConfigError("give at least one model package to serve")
        for model_id in ids:
            check_model_id(model_id)
        self.models = {i: ServedModel.wrap(i, m) for i, m in pairs}

    def __iter__(self) -> Any:
        return iter(self.models.values())

    def ids(self) -> list[str]:
        return list(self.models)

    def resolve(self, model_id: str | None, *, method: str, endpoint: str, visible: Iterable[str]) -> ServedModel:
        """The model a request names; without a name, the one model that serves the endpoint, if only one does."""
        allowed = [i for i in self.models if i in set(visible)]
        if model_id is None:
            fitting = [i for i in allowed if self.models[i].supports(method)]
            if len(fitting) == 1:
                return self.models[fitting[0]]
            if not fitting:
                raise TaskMismatchError(f"no model on this server serves {endpoint}", param="model")
            raise InvalidRequestError(
                f"this request needs a 'model': more than one model serves {endpoint} ({', '.join(fitting)})",
                param="model",
            )
        if model_id not in allowed:
            raise ModelNotFoundError(unknown_message("model", model_id, allowed), param="model")
        served = self.models[model_id]
        served.require(method, endpoint)
        return served


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:+@")


def check_model_id(model_id: Any) -> str:
    """A model id travels in JSON bodies, URLs (``/v1/models/{id}``) and metric labels: keep it plain."""
    if not isinstance(model_id, str) or not 1 <= len(model_id) <= 128 or not set(model_id) <= _ID_CHARS:
        raise ConfigError(
            f"a model id must be 1-128 letters, digits or . _ - : + @ (got {model_id!r})",
            hint="name it yourself: edgekit serve my-model=PKG (or --name my-model)",
            param="name",
        )
    return model_id


def default_model_id(path: str | Path) -> str:
    """The id of the package at ``path``: its folder's name (a ``.zip`` package without the suffix)."""
    p = Path(path)
    return p.stem if p.suffix.lower() == ".zip" else p.name


def _model_id(model: Any) -> str:
    # The package folder, as the user named it; the manifest's name is the export source's and is the same
    # for every variant of one model.
    # (``edgekit serve`` names zip packages by their file; here a zip's root is its extraction directory.)
    root = getattr(model, "root", None)
    if root:
        return default_model_id(root)
    name = getattr(getattr(model, "manifest", None), "name", None)
    if not name:
        raise ConfigError("a served model needs an id: serve it as {id: model} or load it from a package")
    return str(name)
