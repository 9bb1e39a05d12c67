"""Conversation variables: what an app tells the persona about the conversation, bounded.

The Web SDK's ``persona.conversationSetVariables(variables)`` sends ``conversationSetVariables
{personaId, variables}``; the variables apply to every later conversation request of the session
(typed, spoken or the ``init`` welcome) and ``conversationGetVariables`` reads them back as
``{variables}``. dpkit uses them in two places:

* corpus answers are templates: ``{{name}}`` is replaced by the variable ``name``,
  ``{{user.name}}`` reads into an object, and ``{{name|friend}}`` says ``friend`` when ``name`` is
  not set (a missing variable without a default says nothing);
* an orchestration server gets them in ``conversationRequest.variables``, merged with the
  request's own (the request's win).

Every value comes from the client, so every bound is checked where the variables enter and named
in the error (:class:`VariablesError`), never a traceback.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpkit.server.conversation import json_kind


@dataclass(frozen=True)
class VariableLimits:
    """How much a session may store: keys, key length, each value's size and nesting."""

    max_variables: int = 64
    max_key_chars: int = 64
    max_value_bytes: int = 4096
    max_depth: int = 4


class VariablesError(ValueError):
    """Variables a client sent that dpkit will not store; the message says which and why."""


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: ``{{ name }}``, ``{{user.name}}``, ``{{name|default text}}``.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:\|([^{}]*))?\}\}")


class ConversationVariables:
    """One session's conversation variables."""

    def __init__(self, limits: VariableLimits | None = None) -> None:
        self.limits = limits or VariableLimits()
        self._values: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        """A copy of what is stored (the body's ``variables`` for ``conversationGetVariables``)."""
        return json.loads(json.dumps(self._values))  # type: ignore[no-any-return]

    def set(self, variables: object, what: str = "conversationSetVariables") -> None:
        """Merge ``variables`` into the store; a ``null`` value removes that variable.

        Nothing is stored unless all of it is valid: the whole request is refused with a
        :class:`VariablesError` naming the first problem.
        """
        checked = self.check(variables, what)
        merged = dict(self._values)
        for key, value in checked.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if len(merged) > self.limits.max_variables:
            raise VariablesError(
                f"{what}: {len(merged)} variables in all, over the limit of "
                f"{self.limits.max_variables} (max_variables)"
            )
        self._values = merged

    def merged(self, variables: object, what: str = "conversationSend") -> dict[str, Any]:
        """The stored variables with a request's own on top (not stored)."""
        own = self.check(variables, what) if variables is not None else {}
        merged = self.snapshot()
        merged.update(own)
        return merged

    def check(self, variables: object, what: str) -> dict[str, Any]:
        """``variables`` if they are within the limits, else a :class:`VariablesError`."""
        limits = self.limits
        if not isinstance(variables, Mapping):
            raise VariablesError(
                f"{what}: 'variables' must be an object, got {json_kind(variables)}"
            )
        if len(variables) > limits.max_variables:
            raise VariablesError(
                f"{what}: {len(variables)} variables, over the limit of {limits.max_variables}"
                " (max_variables)"
            )
        checked: dict[str, Any] = {}
        for key, value in variables.items():
            if not isinstance(key, str) or not key:
                raise VariablesError(f"{what}: a variable name must be a non-empty string")
            if len(key) > limits.max_key_chars:
                raise VariablesError(
                    f"{what}: variable name {key[:20]!r}... is {len(key)} characters, over the "
                    f"limit of {limits.max_key_chars} (max_key_chars)"
                )
            if not _KEY.fullmatch(key):
                raise VariablesError(
                    f"{what}: variable name {key!r} must start with a letter or '_' and hold "
                    "only letters, digits, '_', '-' and '.'"
                )
            depth = _depth(value)
            if depth > limits.max_depth:
                raise VariablesError(
                    f"{what}: variable {key!r} is nested {depth} deep, over the limit of "
                    f"{limits.max_depth} (max_depth)"
                )
            try:
                encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
            except ValueError as exc:
                raise VariablesError(f"{what}: variable {key!r} is not plain JSON: {exc}") from exc
            size = len(encoded.encode("utf-8", "surrogatepass"))
            if size > limits.max_value_bytes:
                raise VariablesError(
                    f"{what}: variable {key!r} is {size} bytes as JSON, over the limit of "
                    f"{limits.max_value_bytes} (max_value_bytes)"
                )
            checked[key] = value
        return checked


def render(template: str, variables: Mapping[str, Any], *, literal_markers: bool = False) -> str:
    """``template`` with each ``{{name}}`` replaced by its variable (see the module docstring).

    With ``literal_markers``, an ``@`` that a variable brings is escaped (``\\@``) so that a
    value can never start a speech marker (:mod:`dpkit.server.speech`).
    """

    def substitute(match: re.Match[str]) -> str:
        value = _lookup(variables, match.group(1))
        if value is None:
            text = (match.group(2) or "").strip()
        elif isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int | float):
            text = _number(value)
        else:
            text = json.dumps(value, ensure_ascii=False)
        return text.replace("@", "\\@") if literal_markers else text

    rendered, count = _PLACEHOLDER.subn(substitute, template)
    if not count:
        return template
    # A missing variable leaves two spaces, or a space before punctuation: tidy both.
    rendered = re.sub(r"[ \t]{2,}", " ", rendered)
    return re.sub(r" ([,.!?;:])", r"\1", rendered).strip()


def _lookup(variables: Mapping[str, Any], path: str) -> object:
    if path in variables:
        return variables[path]
    value: object = variables
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _number(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _depth(value: object) -> int:
    """How deep objects and lists nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        deepest = max(deepest, depth)
        if isinstance(item, Mapping):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return deepest
