"""Chat templates: the package's Jinja template (from the tokenizer's config) turned into a prompt.

Rendering follows transformers' ``apply_chat_template``: a sandboxed, immutable Jinja environment with
``trim_blocks`` and ``lstrip_blocks``, the loop-controls extension, ``raise_exception(msg)`` and
``strftime_now(fmt)`` as globals, and ``messages``, ``bos_token``, ``eos_token``, ``add_generation_prompt``
as variables. The sandbox matters even for a template that came with the model: it is code from the
model's author, run on every request.

jinja2 comes with the ``serve`` extra. Templates compile when the server starts, so a broken one is reported
once in the log and the model still serves completions; ``/v1/chat/completions`` then answers 400 saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgekit.errors import ChatTemplateError, InvalidRequestError
from edgekit.registry import unknown_message

ROLES = ("system", "developer", "user", "assistant", "tool")
_MESSAGE_KEYS = ("role", "content", "name")


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    role: str
    content: str
    name: str | None = None

    @classmethod
    def from_dict(cls, d: Any, index: int) -> ChatMessage:
        where = f"messages[{index}]"
        if not isinstance(d, Mapping):
            raise InvalidRequestError(f"{where} must be an object with 'role' and 'content'", param=where)
        for key in d:
            if key not in _MESSAGE_KEYS:
                raise InvalidRequestError(
                    f"{where}: " + unknown_message("message field", str(key), list(_MESSAGE_KEYS)),
                    hint="tool calls and images are not supported by this server",
                    param=f"{where}.{key}",
                )
        role = d.get("role")
        if role not in ROLES:
            raise InvalidRequestError(
                f"{where}.role must be one of {', '.join(ROLES)} (got {role!r})", param=f"{where}.role"
            )
        name = d.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequestError(f"{where}.name must be a string", param=f"{where}.name")
        return cls(role=role, content=_content(d.get("content"), where), name=name)

    def to_dict(self) -> dict[str, Any]:
        d = {"role": self.role, "content": self.content}
        if self.name is not None:
            d["name"] = self.name
        return d


def _content(value: Any, where: str) -> str:
    """A string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise InvalidRequestError(
                    f"{where}.content[{i}] must be a text part {{'type': 'text', 'text': ...}}",
                    hint="this server's models read text only",
                    param=f"{where}.content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequestError(
        f"{where}.content must be a string or a list of text parts (got {type(value).__name__})",
        param=f"{where}.content",
    )


def parse_messages(value: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("messages must be a non-empty list of {role, content} objects", param="messages")
    return tuple(ChatMessage.from_dict(m, i) for i, m in enumerate(value))


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        """Compile ``source``; raises ``ImportError`` without jinja2 and ``jinja2.TemplateError`` if it is broken."""
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: tuple[ChatMessage, ...]) -> str:
        from jinja2 import TemplateError

        try:
            return self._template.render(
                messages=[m.to_dict() for m in messages],
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=True,
            )
        except _TemplateRefusal as exc:
            raise InvalidRequestError(
                f"the model's chat template refused the messages: {exc}", param="messages"
            ) from None
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # The template indexes what the client sent; whatever it trips on is a property of the messages.
            raise ChatTemplateError(
                f"the model's chat template failed on these messages: {type(exc).__name__}: {exc}",
                hint="check the roles and their order (many templates want user/assistant turns alternating)",
                param="messages",
            ) from None


class _TemplateRefusal(Exception):
    pass


def _raise(message: str) -> None:
    raise _TemplateRefusal(str(message))
