"""The persona's conversation corpus: what it says on arrival, to known phrases, and otherwise.

A corpus is plain data (a persona's ``corpus.json``, already decoded) with no I/O: a welcome
message, a fallback, and intents that each pair a few trigger phrases with one answer::

    {"WELCOME_MESSAGE": "...", "FALLBACK": "...",
     "intents": [{"name": "GREETING", "patterns": ["hello", "hi"], "answer": "..."}]}

Matching is deliberately simple and predictable: the first intent, in corpus order, with a
pattern that occurs in the user's text as a whole word or phrase (case-insensitive) answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

WELCOME_INTENT = "WELCOME_MESSAGE"
FALLBACK_INTENT = "FALLBACK"
_RESERVED = (WELCOME_INTENT, FALLBACK_INTENT)
_TOP_KEYS = frozenset({WELCOME_INTENT, FALLBACK_INTENT, "intents"})
_INTENT_KEYS = frozenset({"name", "patterns", "answer"})


@dataclass(frozen=True)
class Intent:
    """Something the user may say (any of ``patterns``) and the persona's ``answer`` to it."""

    name: str
    patterns: tuple[str, ...]
    answer: str

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("intent name must not be empty")
        if self.name in _RESERVED:
            raise ValueError(f"intent name {self.name!r} is reserved")
        if not self.patterns:
            raise ValueError(f"intent {self.name!r} has no patterns")
        for pattern in self.patterns:
            if not _normalise(pattern):
                raise ValueError(f"intent {self.name!r} has an empty pattern")
        if not self.answer.strip():
            raise ValueError(f"intent {self.name!r} has an empty answer")


@dataclass(frozen=True)
class Answer:
    """What the persona says: ``intent`` is ``WELCOME_MESSAGE``, ``FALLBACK`` or an intent name."""

    intent: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """A persona's welcome, fallback and intents, checked when built."""

    welcome: str
    fallback: str
    intents: tuple[Intent, ...]
    _matchers: tuple[tuple[Intent, re.Pattern[str]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.welcome.strip():
            raise ValueError(f"{WELCOME_INTENT} must not be empty")
        if not self.fallback.strip():
            raise ValueError(f"{FALLBACK_INTENT} must not be empty")
        seen: set[str] = set()
        for intent in self.intents:
            if intent.name in seen:
                raise ValueError(f"intent {intent.name!r} is defined twice")
            seen.add(intent.name)
        # Compiled once: answering is then one regex search per intent.
        matchers = tuple((intent, _compile(intent.patterns)) for intent in self.intents)
        object.__setattr__(self, "_matchers", matchers)

    @classmethod
    def from_json(cls, data: object) -> Corpus:
        """Build a corpus from decoded ``corpus.json`` data; ValueError says what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"corpus must be a JSON object, got {json_kind(data)}")
        unknown = sorted(str(key) for key in data if key not in _TOP_KEYS)
        if unknown:
            raise ValueError(f"corpus has unknown keys: {', '.join(unknown)}")
        welcome = _text(data, WELCOME_INTENT, "corpus")
        fallback = _text(data, FALLBACK_INTENT, "corpus")
        raw_intents = data.get("intents", [])
        if not isinstance(raw_intents, list):
            raise ValueError(f"corpus intents must be a list, got {json_kind(raw_intents)}")
        intents = tuple(_intent(raw, index) for index, raw in enumerate(raw_intents))
        return cls(welcome, fallback, intents)

    def answer(self, text: str, optional_args: Mapping[str, object] | None = None) -> Answer:
        """The persona's answer to ``text``.

        As in the Web SDK, an empty message with ``optional_args`` ``{"kind": "init"}`` asks
        for the welcome message. Otherwise the first intent with a pattern in ``text`` (as a
        whole word or phrase, ignoring case) answers, or else the fallback.
        """
        normalised = _normalise(text)
        if not normalised and optional_args is not None and optional_args.get("kind") == "init":
            return Answer(WELCOME_INTENT, self.welcome)
        for intent, matcher in self._matchers:
            if matcher.search(normalised):
                return Answer(intent.name, intent.answer)
        return Answer(FALLBACK_INTENT, self.fallback)


def _normalise(text: str) -> str:
    # casefold() rather than lower(), so that "STRASSE" and "Straße" match each other.
    return " ".join(text.casefold().split())


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # Lookarounds rather than \b, so a pattern that starts or ends with punctuation ("what's up?")
    # still has to stand alone, and "hi" never matches inside "this".
    phrases = "|".join(re.escape(_normalise(pattern)) for pattern in patterns)
    return re.compile(rf"(?<!\w)(?:{phrases})(?!\w)")


def _intent(raw: object, index: int) -> Intent:
    where = f"intents[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {json_kind(raw)}")
    unknown = sorted(str(key) for key in raw if key not in _INTENT_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown keys: {', '.join(unknown)}")
    name = _text(raw, "name", where)
    named = f"{where} ({name!r})"
    patterns = raw.get("patterns")
    if not isinstance(patterns, list):
        raise ValueError(f"{named} patterns must be a list of strings, got {json_kind(patterns)}")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"{named} patterns must be strings, got {json_kind(pattern)}")
    answer = _text(raw, "answer", named)
    try:
        return Intent(name, tuple(patterns), answer)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _text(data: Mapping[object, object], key: str, where: str) -> str:
    if key not in data:
        raise ValueError(f"{where} is missing {key!r}")
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{where} {key!r} must be a string, got {json_kind(value)}")
    return value


def json_kind(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
