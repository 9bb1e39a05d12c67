"""A small reference orchestration server: answers from a rule table, and can end a conversation.

The session server names it in ``accepted.controlUrl``; the client opens
``<controlUrl>?access_token=...`` and relays (docs/protocol.md, section 8). This server takes
the session server's ``conversationRequest`` events and answers each with
``conversationResponse`` from the first rule whose words appear in the text. A rule with ``end``
set then sends ``endConversation``, which the session server turns into
``close {reason: "conversationEnded"}``.

Rules come from a JSON file, ``[{"match": ["bye"], "answer": "Bye!", "end": true}, ...]``, with a
rule whose ``match`` is empty as the fallback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from dpkit.errors import ConfigurationError, ProtocolError
from dpkit.protocol.messages import SceneEvent, parse_frame, serialize_frame

logger = logging.getLogger("dpkit.orchestrator")

CONTROL_PATH = "/control"


@dataclass(frozen=True)
class Rule:
    """Answer ``answer`` when any of ``match`` is in the text; ``end`` then ends the talk."""

    match: tuple[str, ...]
    answer: str
    end: bool = False

    def matches(self, text: str) -> bool:
        lowered = text.lower()
        return not self.match or any(word in lowered for word in self.match)


DEFAULT_RULES = (
    Rule(("hello", "hi", "hey"), "Hello from the orchestration server!"),
    Rule(("bye", "goodbye"), "Goodbye! Ending our conversation now.", end=True),
    Rule((), "The orchestration server heard you."),
)


def load_rules(path: Path) -> tuple[Rule, ...]:
    """Read a JSON rule table; raise ConfigurationError saying what is wrong with it."""
    try:
        data = json.loads(path.read_text())
        rules = tuple(
            Rule(
                tuple(str(word).lower() for word in item.get("match", [])),
                str(item["answer"]),
                bool(item.get("end", False)),
            )
            for item in data
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{path}: not a rule table ({exc})") from None
    if not rules:
        raise ConfigurationError(f"{path}: the rule table is empty")
    return rules


@dataclass
class Orchestrator:
    """The rule table and what the server has seen (for logs and tests)."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def answer(self, text: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.matches(text)), None)


ORCHESTRATOR = web.AppKey("dpkit_orchestrator", Orchestrator)


async def control_socket(request: web.Request) -> web.WebSocketResponse:
    """One session's control socket, opened by its client."""
    orchestrator = request.app[ORCHESTRATOR]
    if not request.query.get("access_token"):
        raise web.HTTPUnauthorized(text="access_token is required")
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    orchestrator.connections += 1
    orchestrator.sockets.add(ws)
    try:
        await _serve(orchestrator, ws)
    finally:
        orchestrator.sockets.discard(ws)
    return ws


async def _serve(orchestrator: Orchestrator, ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type is not WSMsgType.TEXT:
            continue
        try:
            frame = parse_frame(message.data)
        except ProtocolError as exc:
            logger.warning("ignored a malformed frame: %s", exc.message)
            continue
        if isinstance(frame, SceneEvent) and frame.name == "conversationRequest":
            for reply in _replies(orchestrator, frame.body):
                await ws.send_str(serialize_frame(reply))


def _replies(orchestrator: Orchestrator, body: dict[str, Any]) -> list[SceneEvent]:
    question = body.get("input")
    text = str(question.get("text", "")) if isinstance(question, dict) else ""
    orchestrator.requests.append(text)
    rule = orchestrator.answer(text)
    if rule is None:
        return []
    replies = [
        SceneEvent(
            "conversationResponse",
            {
                "input": {"text": text},
                "output": {"text": rule.answer},
                "variables": body.get("variables") or {},
            },
        )
    ]
    if rule.end:
        replies.append(SceneEvent("endConversation", {"reason": "the rule table said so"}))
    return replies


def create_orchestrator_app(orchestrator: Orchestrator | None = None) -> web.Application:
    app = web.Application()
    app[ORCHESTRATOR] = orchestrator or Orchestrator()
    app.router.add_get(CONTROL_PATH, control_socket)

    async def close_sockets(app: web.Application) -> None:
        # Stopping closes every control socket, so each session hears controlDisconnected.
        for ws in list(app[ORCHESTRATOR].sockets):
            await ws.close()

    app.on_shutdown.append(close_sockets)
    return app
