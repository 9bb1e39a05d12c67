"""The conversation corpus: loading and checking corpus.json, and answering what the user says."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from dpkit.server.conversation import FALLBACK_INTENT, WELCOME_INTENT, Answer, Corpus, Intent


def ava() -> Corpus:
    """The built-in persona's corpus, read from the installed package."""
    source = resources.files("dpkit.personas").joinpath("ava", "corpus.json").read_text("utf-8")
    return Corpus.from_json(json.loads(source))


def minimal(**changes: Any) -> dict[str, Any]:
    """A valid corpus as decoded JSON, with ``changes`` applied to its top level."""
    data: dict[str, Any] = {
        "WELCOME_MESSAGE": "Welcome!",
        "FALLBACK": "Pardon?",
        "intents": [{"name": "GREETING", "patterns": ["hi"], "answer": "Hello!"}],
    }
    data.update(changes)
    return data


def test_built_in_corpus_loads() -> None:
    """Ava's corpus.json is valid and has its welcome, fallback and intents."""
    corpus = ava()
    assert corpus.welcome.startswith("Hello! I'm Ava")
    assert corpus.fallback.startswith("Sorry")
    assert [intent.name for intent in corpus.intents] == ["GREETING", "NAME", "HELP", "GOODBYE"]
    assert "good morning" in corpus.intents[0].patterns


def test_init_gives_the_welcome_message() -> None:
    """An empty message with kind "init" is answered with WELCOME_MESSAGE."""
    corpus = ava()
    assert corpus.answer("", {"kind": "init"}) == Answer(WELCOME_INTENT, corpus.welcome)
    assert corpus.answer("  ", {"kind": "init"}).intent == WELCOME_INTENT


def test_empty_text_without_init_gets_the_fallback() -> None:
    """Only the init kind asks for the welcome; other empty messages get FALLBACK."""
    corpus = ava()
    assert corpus.answer("") == Answer(FALLBACK_INTENT, corpus.fallback)
    assert corpus.answer("", {"kind": "other"}).intent == FALLBACK_INTENT


def test_init_with_text_is_answered_as_text() -> None:
    """A message with text is matched against the intents even when its kind is init."""
    assert ava().answer("goodbye", {"kind": "init"}).intent == "GOODBYE"


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hello there", "GREETING"),
        ("Hi!", "GREETING"),
        ("HEY, you", "GREETING"),
        ("Good   Morning, Ava", "GREETING"),
        ("What is your name?", "NAME"),
        ("who are you", "NAME"),
        ("can you help me", "HELP"),
        ("what can you do?", "HELP"),
        ("ok bye", "GOODBYE"),
        ("see you later", "GOODBYE"),
    ],
)
def test_patterns_match_whole_words_ignoring_case(text: str, intent: str) -> None:
    """A pattern anywhere in the text, as a word or phrase in any case, picks its intent."""
    corpus = ava()
    answer = corpus.answer(text)
    assert answer.intent == intent
    assert answer.text == next(i.answer for i in corpus.intents if i.name == intent)


@pytest.mark.parametrize("text", ["this", "which", "shell", "helpful", "goodbyes", "maybe"])
def test_patterns_do_not_match_inside_words(text: str) -> None:
    """ "hi" is not found in "this", nor "bye" in "maybe": such text gets the fallback."""
    assert ava().answer(text).intent == FALLBACK_INTENT


def test_first_matching_intent_wins() -> None:
    """When several intents match, the one earlier in the corpus answers."""
    corpus = ava()
    assert corpus.answer("hello, what is your name?").intent == "GREETING"
    assert corpus.answer("help, goodbye").intent == "HELP"


def test_patterns_are_literal_text() -> None:
    """Regex characters in a pattern are matched literally."""
    corpus = Corpus.from_json(
        minimal(intents=[{"name": "SHRUG", "patterns": ["what's up?"], "answer": "Not much."}])
    )
    assert corpus.answer("So, WHAT'S UP?").intent == "SHRUG"
    assert corpus.answer("whats up").intent == FALLBACK_INTENT


def test_corpus_without_intents_always_falls_back() -> None:
    """An empty intents list (or none at all) is valid: every message gets FALLBACK."""
    data = minimal()
    del data["intents"]
    assert Corpus.from_json(data).answer("hi").intent == FALLBACK_INTENT
    assert Corpus.from_json(minimal(intents=[])).answer("hi").intent == FALLBACK_INTENT


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "corpus must be a JSON object, got a list"),
        (minimal(WELCOME_MESSAGE=None), "'WELCOME_MESSAGE' must be a string, got null"),
        ({"FALLBACK": "x", "intents": []}, "corpus is missing 'WELCOME_MESSAGE'"),
        (minimal(FALLBACK=" "), "FALLBACK must not be empty"),
        (minimal(intent=[]), "unknown keys: intent"),
        (minimal(intents={}), "intents must be a list, got an object"),
        (minimal(intents=["hi"]), r"intents\[0\] must be a JSON object, got a string"),
        (minimal(intents=[{"patterns": ["hi"], "answer": "a"}]), r"intents\[0\] is missing 'name'"),
        (
            minimal(intents=[{"name": "A", "patterns": "hi", "answer": "a"}]),
            r"intents\[0\] \('A'\) patterns must be a list of strings, got a string",
        ),
        (
            minimal(intents=[{"name": "A", "patterns": [1], "answer": "a"}]),
            "patterns must be strings, got a number",
        ),
        (minimal(intents=[{"name": "A", "patterns": [], "answer": "a"}]), "'A' has no patterns"),
        (
            minimal(intents=[{"name": "A", "patterns": ["  "], "answer": "a"}]),
            "'A' has an empty pattern",
        ),
        (minimal(intents=[{"name": "A", "patterns": ["x"]}]), r"\('A'\) is missing 'answer'"),
        (
            minimal(intents=[{"name": "A", "patterns": ["x"], "answer": "a", "extra": 1}]),
            r"intents\[0\] has unknown keys: extra",
        ),
        (
            minimal(intents=[{"name": "FALLBACK", "patterns": ["x"], "answer": "a"}]),
            "'FALLBACK' is reserved",
        ),
        (
            minimal(
                intents=[
                    {"name": "A", "patterns": ["x"], "answer": "a"},
                    {"name": "A", "patterns": ["y"], "answer": "b"},
                ]
            ),
            "intent 'A' is defined twice",
        ),
    ],
)
def test_malformed_corpus_is_a_value_error_saying_what_is_wrong(data: object, message: str) -> None:
    """Each kind of bad corpus raises ValueError naming the key or intent at fault."""
    with pytest.raises(ValueError, match=message):
        Corpus.from_json(data)


def test_intents_can_be_built_directly() -> None:
    """A corpus built from Intent objects answers like one loaded from JSON."""
    corpus = Corpus("Hi!", "Eh?", (Intent("THANKS", ("thank you", "thanks"), "You're welcome."),))
    assert corpus.answer("Thanks a lot") == Answer("THANKS", "You're welcome.")
    assert corpus.answer("thank") == Answer(FALLBACK_INTENT, "Eh?")
