"""Interactive ``dpkit connect`` on a real pseudo-terminal: what the person at it sees.

The client runs in a process of its own with a pty as its stdin, stdout and stderr, against a
real server on loopback. The test types into the pty as a person would and feeds everything the
client writes through :class:`Screen`, a minimal terminal that understands the few control
sequences rich and dpkit emit, then checks the screen the person is left looking at.
"""

from __future__ import annotations

import re
import termios
from pathlib import Path

from dpkit.client.consent import Decision, FileConsentStore
from dpkit.server import DpkitServer
from tests import support_audio
from tests.cli.connect_support import REAL_MICROPHONE_ARGS, PtyClient, Screen
from tests.support import UNIT
from tests.support_audio import VirtualAudio


def test_the_screen_understands_what_it_is_fed() -> None:
    """The emulator itself: writing, wrapping, erasing, cursor moves and save/restore."""
    screen = Screen(width=10)
    screen.feed("status\r\n> hel")
    screen.feed("\r\x1b[2K\x1b[1A\r\x1b[2Kfigures\r\n> hello")
    assert screen.lines == ["figures", "> hello"]
    assert (screen.row, screen.col) == (1, 7)
    screen.feed("\x1b7\x1b[1A\r\x1b[2Knew\x1b8!")
    assert screen.lines == ["new", "> hello!"]
    screen.feed("\r\n0123456789ab")
    assert screen.lines[-2:] == ["0123456789", "ab"]
    screen.feed("\x1b[31mred\x1b[0m\x1b[?25l\x1b")
    screen.feed("[3Dx")
    assert screen.line() == "abxed"


#: A private PulseAudio server: its null sink's monitor is this machine's (real) microphone.
virtual_audio = support_audio.virtual_audio

STATUS = re.compile(r"^video \d+x\d+ \d+ fps \| persona audio: ")


async def wait_for_prompt(client: PtyClient) -> None:
    """Until the status line stands above an empty prompt: connected and ready for input."""
    await client.wait_for(
        lambda s: s.line() == ">" and bool(STATUS.match(status_line(s))),
        "the status line above an empty prompt",
    )


def status_line(screen: Screen) -> str:
    """The fixed status line: the one just above the prompt."""
    return screen.line(-1)


async def test_typing_is_never_overwritten_by_the_status_line(
    server: DpkitServer, tmp_path: Path
) -> None:
    """Typed slowly while the media line redraws, the input stays whole on the prompt line."""
    client = await PtyClient.spawn(
        "connect",
        server.api_key(),
        "--devices",
        "synthetic",
        "--duration",
        "60",
        state_dir=tmp_path,
    )
    try:
        await wait_for_prompt(client)
        for char in "hello":
            mark = len(client.output)
            client.type(char)
            await client.wait_for_output(re.escape(char), mark, f"{char!r} echoed")
            mark = len(client.output)
            await client.wait_for_output(" fps", mark, "the status line redrawn")
        screen = client.screen
        assert screen.line() == "> hello", screen.dump()
        assert screen.col == len("> hello")
        assert STATUS.match(status_line(screen)), screen.dump()
        assert [line for line in screen.lines if " fps" in line] == [status_line(screen)]

        # Editing keys: left arrow, insert, backspace, Ctrl-U.
        client.type("\x1b[D\x1b[DX")
        await client.wait_for(lambda s: s.line() == "> helXlo", "an insertion before the cursor")
        client.type("\x7f\x1b[C\x1b[C!\x15")
        await client.wait_for(lambda s: s.line() == ">", "the line cleared by Ctrl-U")

        client.type("hello\r")
        await client.wait_for(
            lambda s: (
                "you: hello" in s.lines and any(line.startswith("persona: ") for line in s.lines)
            ),
            "the words said and the persona's answer above the status line",
        )
        assert client.screen.line() == ">"
        assert STATUS.match(status_line(client.screen))

        client.type("/p\r")
        await client.wait_for(
            lambda s: "persona audio: muted" in status_line(s), "mute shown in the status line"
        )
        assert "persona muted" in client.screen.lines
        assert "dBFS" not in status_line(client.screen)
        client.type("/m\r")
        await client.wait_for(
            lambda s: "microphone: off" in status_line(s), "microphone off in the status line"
        )
        client.type("/q\r")
        assert await client.exit_code() == 0, client.screen.dump()
        assert any(line.startswith("Disconnected: session") for line in client.screen.lines)
        assert client.local_modes() & (termios.ECHO | termios.ICANON) == (
            termios.ECHO | termios.ICANON
        ), "the terminal's modes are restored"
    finally:
        await client.close()


QUESTION = re.compile(r"Allow http://127\.0\.0\.1:\d+ to use your (microphone|camera)\? \[y/N\]")


async def test_the_consent_question_is_never_drawn_over(
    virtual_audio: VirtualAudio, server: DpkitServer, tmp_path: Path
) -> None:
    """While the progress bar runs, the [y/N] question stays the last thing on its line."""
    client = await PtyClient.spawn(
        "connect",
        server.api_key(),
        *REAL_MICROPHONE_ARGS,
        "--duration",
        "60",
        state_dir=tmp_path,
    )
    try:
        await client.wait_for(
            lambda s: bool(QUESTION.fullmatch(s.line())), "the microphone question on the screen"
        )
        question = client.screen.line()
        assert "microphone" in question
        assert client.screen.col == len(question) + 1  # the cursor waits after "[y/N] "
        # Nothing can be awaited for "nothing happened": the progress bar refreshes several times
        # a second, so a second of quiet shows it is not redrawing over the question.
        redrawn = await client.quiet(1.0 * UNIT)
        assert redrawn == "", f"drawn while the question was open: {redrawn!r}"
        assert client.screen.line() == question

        client.type("y\r")
        await client.wait_for(
            lambda s: bool(STATUS.match(status_line(s))) and s.line() == ">",
            "connected with the microphone, at the prompt",
        )
        lines = client.screen.lines
        assert question + " y" in lines, client.screen.dump()
        assert any(line.startswith("Connected: session id") for line in lines)
        assert "microphone: on" in status_line(client.screen)
        assert "camera: off" in status_line(client.screen)
        client.type("/q\r")
        assert await client.exit_code() == 0
        store = FileConsentStore(tmp_path / "dpkit" / "permissions.json")
        decisions = [(p.device, p.decision) for p in store.list()]
        assert decisions == [("microphone", Decision.GRANTED)]
    finally:
        await client.close()


async def test_a_device_turned_on_asks_on_the_prompt_line(
    virtual_audio: VirtualAudio, server: DpkitServer, tmp_path: Path
) -> None:
    """/m with devices behind consent asks [y/N] in the prompt's place; the next line answers."""
    client = await PtyClient.spawn(
        "connect",
        server.api_key(),
        "--devices",
        "system",
        "--request",
        "none",
        "--require",
        "none",
        "--duration",
        "60",
        state_dir=tmp_path,
    )
    try:
        await wait_for_prompt(client)
        client.type("/m\r")
        await client.wait_for(
            lambda s: bool(QUESTION.fullmatch(s.line())), "the microphone question as the prompt"
        )
        assert STATUS.match(status_line(client.screen))
        question = client.screen.line()
        mark = len(client.output)
        await client.wait_for_output(" fps", mark, "the status line redrawn")
        assert client.screen.line() == question, "the status redraw keeps the question"
        client.type("n\r")
        await client.wait_for(
            lambda s: any("not permitted" in line for line in s.lines) and s.line() == ">",
            "the refusal reported and the prompt back",
        )
        assert question + " n" in client.screen.lines
        assert "microphone: off" in status_line(client.screen)
        client.type("/m\r")
        await client.wait_for(
            lambda s: bool(QUESTION.fullmatch(s.line())), "the question again, as it was declined"
        )
        client.type("yes\r")
        await client.wait_for(
            lambda s: "microphone on" in s.lines and "microphone: on" in status_line(s),
            "the microphone on, and the status line saying so",
        )
        assert question + " yes" in client.screen.lines
        client.type("/q\r")
        assert await client.exit_code() == 0
    finally:
        await client.close()


async def test_a_line_wider_than_the_screen_scrolls_and_ctrl_d_quits(
    server: DpkitServer, tmp_path: Path
) -> None:
    """Input wider than the terminal scrolls within the prompt line; Ctrl-D on it empty quits."""
    client = await PtyClient.spawn(
        "connect",
        server.api_key(),
        "--devices",
        "synthetic",
        "--duration",
        "60",
        state_dir=tmp_path,
    )
    try:
        await wait_for_prompt(client)
        words = " ".join(f"word{i:03d}" for i in range(20))  # 159 characters
        client.type(words)
        await client.wait_for(lambda s: s.line().endswith("word019"), "the end of the line")
        screen = client.screen
        assert screen.line().startswith("> ")
        assert len(screen.line()) < screen.width
        assert screen.col == len(screen.line())
        assert STATUS.match(status_line(screen)), screen.dump()
        client.type("\r")
        # Above the status: just above it, or higher once the persona's answer came (it may come
        # before the screen is looked at again, on a busy machine).
        await client.wait_for(
            lambda s: any("word019" in s.line(-above) for above in range(2, 8)),
            "the words said, above the status",
        )
        # Printed as one line, which the terminal wraps at its width (copied, it stays whole).
        assert "you: " + words in "".join(client.screen.lines), client.screen.dump()
        client.type("\x04")
        assert await client.exit_code() == 0
        assert [info.ending for info in server.state.ended] == ["normal"]
    finally:
        await client.close()
