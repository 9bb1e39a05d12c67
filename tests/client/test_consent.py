"""Remembered microphone and camera consent: grants persist, refusals block, reset unblocks."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from dpkit.client.consent import (
    ConsentGate,
    ConsentStore,
    Decision,
    FileConsentStore,
    MemoryConsentStore,
    Permission,
    default_prompt,
    origin_of,
    terminal_prompt,
)
from dpkit.client.devices import DeviceFailure
from dpkit.client.options import MediaDevices
from dpkit.errors import ConfigurationError

ORIGIN = "http://127.0.0.1:8080"
OTHER = "http://127.0.0.1:9090"
MIC = MediaDevices(microphone=True)
CAM = MediaDevices(camera=True)
BOTH = MediaDevices(microphone=True, camera=True)
NONE = MediaDevices()


class FakeUser:
    """A fake at the user-interaction boundary: answers every prompt with `grants`, records asks."""

    def __init__(self, grants: MediaDevices = NONE) -> None:
        self.grants = grants
        self.calls: list[tuple[str, MediaDevices]] = []

    async def __call__(self, origin: str, devices: MediaDevices) -> MediaDevices:
        self.calls.append((origin, devices))
        return self.grants


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ConsentStore:
    """Each store kind, so the memory and file stores are held to the same rules."""
    if request.param == "memory":
        return MemoryConsentStore()
    return FileConsentStore(tmp_path / "permissions.json")


def decisions(store: ConsentStore) -> list[tuple[str, str, Decision, int]]:
    return [(p.origin, p.device, p.decision, p.refusals) for p in store.list()]


async def test_a_grant_persists_across_processes(tmp_path: Path) -> None:
    """A grant written by one process is read by another, and the next request asks nothing."""
    path = tmp_path / "state" / "permissions.json"
    user = FakeUser(grants=MIC)
    assert await ConsentGate(FileConsentStore(path), user).request(ORIGIN, MIC) == MIC
    assert user.calls == [(ORIGIN, MIC)]

    reader = (
        "import sys; from pathlib import Path; from dpkit.client.consent import FileConsentStore; "
        "print(FileConsentStore(Path(sys.argv[1])).get(sys.argv[2], 'microphone').decision.name)"
    )
    reading = await asyncio.create_subprocess_exec(
        sys.executable, "-c", reader, str(path), ORIGIN, stdout=subprocess.PIPE
    )
    out, _ = await reading.communicate()
    assert reading.returncode == 0
    assert out.decode().strip() == "GRANTED"

    later = FakeUser()
    assert await ConsentGate(FileConsentStore(path), later).request(ORIGIN, MIC) == MIC
    assert later.calls == []


async def test_three_refusals_block_and_the_fourth_request_asks_nothing(
    store: ConsentStore,
) -> None:
    """Refused three times, a device is BLOCKED; the next request fails without a prompt."""
    user = FakeUser()
    gate = ConsentGate(store, user)
    seen = []
    for _ in range(3):
        assert await gate.request(ORIGIN, MIC) == NONE
        seen.append(store.get(ORIGIN, "microphone").decision)
    assert seen == [Decision.DENIED, Decision.DENIED, Decision.BLOCKED]
    assert len(user.calls) == 3

    assert await gate.request(ORIGIN, MIC) == NONE
    assert len(user.calls) == 3
    assert decisions(store) == [(ORIGIN, "microphone", Decision.BLOCKED, 3)]

    error = gate.blocked_error(ORIGIN, "microphone")
    assert error.failure is DeviceFailure.NOT_PERMITTED
    assert error.message.startswith("the user microphone/camera were not permitted by the user")
    assert (
        f"blocked after 3 refusals for {ORIGIN}: run 'dpkit permissions reset --origin {ORIGIN}'"
        in error.message
    )
    assert f"run 'dpkit permissions reset --origin {ORIGIN} --device microphone'" in error.advice


async def test_reset_unblocks_so_the_prompt_is_asked_again(store: ConsentStore) -> None:
    """After reset a blocked device is UNDECIDED with no refusals, and the user is asked again."""
    user = FakeUser()
    gate = ConsentGate(store, user, max_refusals=1)
    await gate.request(ORIGIN, MIC)
    assert store.get(ORIGIN, "microphone").decision is Decision.BLOCKED

    assert store.reset(ORIGIN) == 1
    assert store.get(ORIGIN, "microphone") == Permission(ORIGIN, "microphone", Decision.UNDECIDED)
    user.grants = MIC
    assert await gate.request(ORIGIN, MIC) == MIC
    assert user.calls == [(ORIGIN, MIC), (ORIGIN, MIC)]


async def test_a_denied_device_is_asked_again_until_blocked(store: ConsentStore) -> None:
    """One refusal leaves the device DENIED, which is asked again, like a browser re-prompting."""
    user = FakeUser()
    gate = ConsentGate(store, user)
    await gate.request(ORIGIN, CAM)
    user.grants = CAM
    assert await gate.request(ORIGIN, CAM) == CAM
    assert user.calls == [(ORIGIN, CAM), (ORIGIN, CAM)]
    # A grant ends the run of refusals.
    assert decisions(store) == [(ORIGIN, "camera", Decision.GRANTED, 0)]


async def test_open_devices_are_asked_together_and_granted_ones_not_at_all(
    store: ConsentStore,
) -> None:
    """Undecided devices share one prompt; a granted device is left out of the question."""
    user = FakeUser(grants=MIC)
    gate = ConsentGate(store, user)
    assert await gate.request(ORIGIN, BOTH) == MIC
    user.grants = CAM
    assert await gate.request(ORIGIN, BOTH) == BOTH
    assert user.calls == [(ORIGIN, BOTH), (ORIGIN, CAM)]
    assert decisions(store) == [
        (ORIGIN, "microphone", Decision.GRANTED, 0),
        (ORIGIN, "camera", Decision.GRANTED, 0),
    ]


async def test_a_blocked_device_is_left_out_of_the_question_for_the_other(
    store: ConsentStore,
) -> None:
    """With the camera blocked, a request for both asks only about the microphone."""
    user = FakeUser(grants=MIC)
    gate = ConsentGate(store, user)
    store.set(Permission(ORIGIN, "camera", Decision.BLOCKED, 3, 1.0))
    assert await gate.request(ORIGIN, BOTH) == MIC
    assert user.calls == [(ORIGIN, MIC)]


async def test_the_prompt_cannot_grant_a_device_it_was_not_asked_about(
    store: ConsentStore,
) -> None:
    """A prompt answering with more than was asked grants only what was asked."""
    gate = ConsentGate(store, FakeUser(grants=BOTH))
    assert await gate.request(ORIGIN, MIC) == MIC
    assert decisions(store) == [(ORIGIN, "microphone", Decision.GRANTED, 0)]


async def test_decisions_are_per_origin(store: ConsentStore) -> None:
    """A grant to one origin is not a grant to another."""
    user = FakeUser(grants=MIC)
    gate = ConsentGate(store, user)
    await gate.request(ORIGIN, MIC)
    await gate.request(OTHER, MIC)
    assert user.calls == [(ORIGIN, MIC), (OTHER, MIC)]


async def test_no_prompt_and_no_decision_declines_and_stores_nothing(
    store: ConsentStore,
) -> None:
    """Without a prompt an undecided device is declined, not counted as a refusal, not stored."""
    gate = ConsentGate(store, None)
    assert await gate.request(ORIGIN, BOTH) == NONE
    assert store.list() == []


async def test_no_prompt_still_honours_a_stored_grant(store: ConsentStore) -> None:
    """Without a prompt a remembered grant still passes; the undecided device is declined."""
    store.set(Permission(ORIGIN, "camera", Decision.GRANTED, 0, 1.0))
    assert await ConsentGate(store, None).request(ORIGIN, BOTH) == CAM
    assert decisions(store) == [(ORIGIN, "camera", Decision.GRANTED, 0)]


async def test_asking_for_nothing_asks_nobody(store: ConsentStore) -> None:
    """A request for no devices returns none without calling the prompt."""
    user = FakeUser(grants=BOTH)
    assert await ConsentGate(store, user).request(ORIGIN, NONE) == NONE
    assert user.calls == []


async def test_revoke_blocks_without_asking_again(store: ConsentStore) -> None:
    """revoke makes a GRANTED device BLOCKED (the seed): the next request asks nothing."""
    await ConsentGate(store, FakeUser(grants=BOTH)).request(ORIGIN, BOTH)
    store.revoke(ORIGIN, "camera")
    assert decisions(store) == [
        (ORIGIN, "microphone", Decision.GRANTED, 0),
        (ORIGIN, "camera", Decision.BLOCKED, 0),
    ]
    user = FakeUser(grants=BOTH)
    granted = await ConsentGate(store, user).request(ORIGIN, BOTH)
    assert (granted.microphone, granted.camera) == (True, False)
    assert user.calls == []
    # Blocked by a revoke, not by refusals: the error says so, and how to undo it.
    error = ConsentGate(store, user).blocked_error(ORIGIN, "camera")
    assert "access was revoked" in error.message
    assert "refusals" not in error.message
    assert f"dpkit permissions reset --origin {ORIGIN} --device camera" in error.advice


def test_revoke_leaves_a_block_a_block(store: ConsentStore) -> None:
    """Revoking a blocked device does not turn it into a mere denial."""
    store.set(Permission(ORIGIN, "microphone", Decision.BLOCKED, 3, 1.0))
    store.revoke(ORIGIN, "microphone")
    assert decisions(store) == [(ORIGIN, "microphone", Decision.BLOCKED, 3)]


def test_reset_clears_only_what_matches_and_counts_it(store: ConsentStore) -> None:
    """reset by origin, by device, or everything, returning how many decisions it cleared."""
    for origin in (ORIGIN, OTHER):
        for device in ("microphone", "camera"):
            store.set(Permission(origin, device, Decision.GRANTED, 0, 1.0))
    assert store.reset(OTHER, "camera") == 1
    assert store.reset(device="microphone") == 2
    assert decisions(store) == [(ORIGIN, "camera", Decision.GRANTED, 0)]
    assert store.reset() == 1
    assert store.reset() == 0
    assert store.list() == []


def test_origins_are_compared_as_origins(store: ConsentStore) -> None:
    """A trailing slash, a path or upper-case host names the same origin."""
    store.set(Permission("HTTP://127.0.0.1:8080/session/", "camera", Decision.GRANTED, 0, 1.0))
    assert store.get(ORIGIN, "camera").decision is Decision.GRANTED
    assert origin_of("http://[::1]:8080/x") == "http://[::1]:8080"
    assert origin_of("kiosk") == "kiosk"


def test_unknown_devices_and_bad_limits_are_configuration_errors(store: ConsentStore) -> None:
    """An unknown device name or a max_refusals below one is refused when given."""
    with pytest.raises(ConfigurationError, match="unknown device 'speaker'"):
        store.get(ORIGIN, "speaker")
    with pytest.raises(ConfigurationError, match="max_refusals"):
        ConsentGate(store, None, max_refusals=0)


def test_the_file_is_private_and_a_damaged_one_reads_as_empty(tmp_path: Path) -> None:
    """permissions.json is written 0600; unreadable JSON or entries read as no decisions."""
    path = tmp_path / "permissions.json"
    store = FileConsentStore(path)
    store.set(Permission(ORIGIN, "microphone", Decision.GRANTED, 0, 1.0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["permissions.json"]

    path.write_text("{not json")
    assert store.list() == []
    path.write_text(
        '{"http://a": {"microphone": {"decision": "maybe"}, "speaker": {"decision": "granted"},'
        ' "camera": {"decision": "denied", "refusals": 2, "updatedAt": 5}}, "http://b": 1}'
    )
    assert store.list() == [Permission("http://a", "camera", Decision.DENIED, 2, 5.0)]


def test_the_default_path_is_in_the_users_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a path the store uses $XDG_STATE_HOME/dpkit/permissions.json."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert FileConsentStore().path == tmp_path / "dpkit" / "permissions.json"


def scripted_input(answers: list[str | None]) -> tuple[Callable[[str], str], list[str]]:
    """A fake at the user-interaction boundary: the terminal's input(); None means end of input."""
    questions: list[str] = []

    def console_input(question: str) -> str:
        # Blocking input() on the event loop's thread would freeze the connection.
        assert threading.current_thread() is not threading.main_thread()
        questions.append(question)
        answer = answers.pop(0)
        if answer is None:
            raise EOFError
        return answer

    return console_input, questions


async def test_terminal_prompt_asks_once_per_device_and_yes_grants() -> None:
    """One [y/N] question per device; 'y' or 'yes' grants, anything else declines."""
    console_input, questions = scripted_input([" Yes ", "n"])
    assert await terminal_prompt(console_input)(ORIGIN, BOTH) == MIC
    assert questions == [
        f"Allow {ORIGIN} to use your microphone? [y/N] ",
        f"Allow {ORIGIN} to use your camera? [y/N] ",
    ]
    console_input, _ = scripted_input(["", "y"])
    assert await terminal_prompt(console_input)(ORIGIN, BOTH) == CAM


async def test_terminal_prompt_treats_end_of_input_as_no() -> None:
    """A closed stdin answers no instead of raising EOFError."""
    console_input, questions = scripted_input([None])
    assert await terminal_prompt(console_input)(ORIGIN, CAM) == NONE
    assert len(questions) == 1


async def test_the_gate_with_a_terminal_prompt_remembers_the_answer(tmp_path: Path) -> None:
    """A 'y' typed at the terminal is stored, so the next connect does not ask."""
    store = FileConsentStore(tmp_path / "permissions.json")
    console_input, questions = scripted_input(["y"])
    gate = ConsentGate(store, terminal_prompt(console_input))
    assert await gate.request(ORIGIN, MIC) == MIC
    assert await gate.request(ORIGIN, MIC) == MIC
    assert len(questions) == 1


class FakeStdin:
    """A fake at the user-interaction boundary: a stdin that is or is not a terminal."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_default_prompt_asks_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """default_prompt is a terminal prompt on a tty and None otherwise, so scripts never refuse."""
    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=False))
    assert default_prompt() is None
    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=True))
    assert default_prompt() is not None
