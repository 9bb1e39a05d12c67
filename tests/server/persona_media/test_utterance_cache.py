"""The same words in the same voice are synthesised once, whoever asks and however often."""

from __future__ import annotations

import asyncio
import functools
import threading

import numpy as np
import pytest

from dpkit.server.persona_media.utterance_cache import UtteranceCache
from dpkit.server.persona_media.voice import SPOKEN, EspeakVoice, Utterance
from tests.support import until


class Synth:
    """Counts its calls; each makes ``seconds`` of silence, after waiting for ``release``."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.calls = 0
        self.seconds = seconds
        self.release = threading.Event()
        self.release.set()

    def __call__(self, text: str = "") -> Utterance:
        self.calls += 1
        self.release.wait(5)
        return Utterance(text, np.zeros(round(self.seconds * 48000), dtype=np.int16))


async def test_a_repeat_is_served_from_the_cache() -> None:
    cache, synth = UtteranceCache(), Synth()
    first = await cache.get_or_speak("hello", synth)
    again = await cache.get_or_speak("hello", synth)
    assert again is first
    assert synth.calls == 1
    assert (cache.hits, cache.misses) == (1, 1)


async def test_concurrent_requests_for_the_same_words_share_one_synthesis() -> None:
    cache, synth = UtteranceCache(), Synth()
    synth.release.clear()
    waiting = [asyncio.ensure_future(cache.get_or_speak("hi", synth)) for _ in range(20)]
    await until(lambda: synth.calls == 1)  # the first is synthesising; the others wait on it
    assert cache.hits == 19
    synth.release.set()
    results = await asyncio.gather(*waiting)
    assert synth.calls == 1
    assert all(result is results[0] for result in results)


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    cache = UtteranceCache()
    gate = threading.Event()

    def broken() -> Utterance:
        gate.wait(5)
        raise RuntimeError("no voice")

    entered = threading.Event()

    def broken_entered() -> Utterance:
        entered.set()
        return broken()

    waiting = [asyncio.ensure_future(cache.get_or_speak("x", broken_entered)) for _ in range(3)]
    await until(entered.is_set)
    assert cache.hits == 2  # the other two wait on the first
    gate.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert len(cache) == 0
    synth = Synth()
    assert (await cache.get_or_speak("x", synth)).text == ""
    assert synth.calls == 1


async def test_the_budget_drops_the_least_recently_used_first() -> None:
    one = round(0.1 * 48000) * 2  # bytes of one 0.1 s utterance
    cache, synth = UtteranceCache(max_bytes=3 * one), Synth()
    for text in ("a", "b", "c"):
        await cache.get_or_speak(text, functools.partial(synth, text))
    await cache.get_or_speak("a", synth)  # used again: "b" is now the oldest
    await cache.get_or_speak("d", lambda: synth("d"))
    assert len(cache) == 3
    assert cache.bytes == 3 * one
    calls = synth.calls
    await cache.get_or_speak("a", synth)
    await cache.get_or_speak("b", lambda: synth("b"))
    assert synth.calls == calls + 1  # "a" was kept, "b" had to be said again


async def test_an_utterance_over_the_budget_is_not_kept() -> None:
    cache, synth = UtteranceCache(max_bytes=100), Synth()
    await cache.get_or_speak("long", synth)
    assert len(cache) == 0
    assert cache.bytes == 0
    with pytest.raises(ValueError, match="budget"):
        UtteranceCache(max_bytes=-1)


async def test_a_voice_says_the_same_words_once_and_other_voices_their_own() -> None:
    voice = EspeakVoice("en-us", rate_wpm=170)
    text = "Caching makes greetings cheap."
    first = await voice.speak(text)
    again = await EspeakVoice("en-us", rate_wpm=170).speak(text)
    other = await EspeakVoice("en-us", rate_wpm=200).speak(text)
    assert again is first
    assert other is not first
    assert other.duration_s < first.duration_s
    assert SPOKEN.hits >= 1


def test_the_mouth_envelope_is_worked_out_once_and_read_only() -> None:
    samples = (np.sin(np.arange(48000) / 5) * 8000).astype(np.int16)
    utterance = Utterance("a", samples)
    envelope = utterance.mouth_envelope(15.0)
    assert utterance.mouth_envelope(15.0) is envelope
    assert not envelope.flags.writeable
    assert utterance.mouth_envelope(30.0).shape == (30,)
