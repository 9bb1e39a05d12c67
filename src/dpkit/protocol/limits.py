"""The bounds a server session puts on what one client may send, and safe text for logs.

Each limit is named in the refusal it causes, so a client (and its developer) can tell which one
it hit. The defaults match :class:`dpkit.server.settings.Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Scene requests whose ``text`` the persona would speak or answer.
TEXT_REQUESTS = frozenset({"startSpeaking", "conversationSend"})

#: The longest client log line written to the server's log, and lines taken from one frame.
CLIENT_LOG_LINE_CHARS = 500
CLIENT_LOG_LINES_PER_FRAME = 20

#: A client that breaks the protocol this many times is closed with ``protocolError``.
MAX_VIOLATIONS = 50
#: Violations logged at WARNING per session (the first says what was wrong); the rest at DEBUG.
LOGGED_VIOLATIONS = 1


@dataclass(frozen=True)
class SessionLimits:
    """What one session socket accepts from its client."""

    max_frame_bytes: int = 32 * 1024
    max_text_chars: int = 1000
    client_log_max_bytes: int = 64 * 1024


def frame_too_large(text: str | bytes, limit: int) -> bool:
    """Whether a frame is over ``limit`` bytes (UTF-8), without encoding short ones."""
    if len(text) > limit:
        return True
    if isinstance(text, bytes) or len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def printable(text: str, limit: int = CLIENT_LOG_LINE_CHARS) -> str:
    """``text`` cut to ``limit`` characters with every control character escaped.

    A client's words go into the server's log only through here, so a newline can never start a
    forged log line and a terminal escape never reaches an operator's screen.
    """
    cut = text[:limit]
    escaped = "".join(ch if ch.isprintable() else _escape(ch) for ch in cut)
    return escaped + ("..." if len(text) > limit else "")


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
