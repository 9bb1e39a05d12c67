"""The interactive terminal of ``dpkit connect``: a fixed status line above a prompt.

While connected on a terminal, the bottom two lines belong to dpkit: the status line (the media
figures, redrawn once a second) and below it the prompt with what the person is typing.
Everything else (the persona's answers, command results, log lines) is printed above the two,
which are then drawn again, so nothing ever lands in the middle of the input. For that the
terminal is put in cbreak mode (no echo and no kernel line editing; Ctrl-C still interrupts)
and :class:`Terminal` edits the line itself, as the only reader of standard input. A question
(consent's ``[y/N]``) takes the prompt's place until it is answered.

Only a handful of control sequences are written, so any ANSI terminal will do: CR, erase line
(``ESC [2K``), cursor up (``ESC [1A``) and cursor forward (``ESC [nC``).

:class:`ConsentQuestions` asks for the microphone and camera: before the session with the
progress display paused (so the bar cannot draw over the question), during it on the prompt.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import io
import logging
import os
import signal
import sys
import termios
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TextIO

from rich.cells import cell_len, get_character_cell_size
from rich.text import Text

from dpkit.cli.session_keys import HELP_LINE, SessionKeys
from dpkit.client.options import MediaDevices

if TYPE_CHECKING:
    from rich.console import Console

    from dpkit.client.scene import Scene

PROMPT = "> "
WAITING_STATUS = "waiting for the persona's media..."
DEVICES = ("microphone", "camera")

# Control sequences: erase the whole line; cursor up one line.
ERASE_LINE = "\x1b[2K"
UP = "\x1b[1A"
# Ctrl-A and Ctrl-E (to the start, the end), Ctrl-B and Ctrl-F (one back, one forward).
CURSOR_KEYS = {"\x01": -1, "\x05": 1, "\x02": -1, "\x06": 1}


class Terminal:
    """The status line and the prompt at the bottom of the terminal, and the line being typed."""

    def __init__(self, console: Console, fd: int | None = None) -> None:
        self._console = console
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._status = WAITING_STATUS  # rich markup
        self._buffer: list[str] = []
        self._cursor = 0
        self._offset = 0  # the first character shown, when the line is wider than the screen
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._question: tuple[str, asyncio.Future[str]] | None = None
        self._asking = asyncio.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""  # an escape sequence (an arrow key...) read so far
        self._after_cr = False
        self._modes: list[Any] | None = None
        self._drawn = False
        self._log_streams: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.active = False

    # --- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        """Take over the terminal: cbreak mode, the reader, and the two lines drawn."""
        if self.active:
            return
        self._modes = termios.tcgetattr(self._fd)
        self._cbreak()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._readable)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGWINCH, self._draw)
            loop.add_signal_handler(signal.SIGCONT, self._continued)
        self._redirect_logging()
        self.active = True
        self._draw()

    def stop(self) -> None:
        """Give the terminal back as it was; the last status line stays on the screen."""
        if not self.active:
            return
        self.active = False
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self._fd)
        for signum in (signal.SIGWINCH, signal.SIGCONT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
        self._restore_logging()
        if self._modes is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._fd, termios.TCSANOW, self._modes)
        self._write("\r" + ERASE_LINE)  # the prompt goes; the cursor stays below the status
        self._drawn = False
        if self._question is not None:
            # Nobody answered: the question is withdrawn, not refused (nothing is remembered).
            self._question[1].cancel()
        self._lines.put_nowait(None)

    def _cbreak(self) -> None:
        # No echo and no canonical mode; ISIG stays, so Ctrl-C and Ctrl-Z work as always, and
        # the input flags (ICRNL) stay too.
        assert self._modes is not None
        modes = [*self._modes[:6], list(self._modes[6])]
        modes[3] &= ~(termios.ECHO | termios.ICANON)
        modes[6][termios.VMIN] = 1
        modes[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, modes)

    def _continued(self) -> None:
        # Back from Ctrl-Z: the shell may have reset the terminal's modes meanwhile.
        with contextlib.suppress(termios.error):
            self._cbreak()
        self._drawn = False
        self._draw()

    # --- output ---------------------------------------------------------------------------------

    def print(self, text: str, *, markup: bool = False) -> None:
        """Print ``text`` above the status line (plain text unless ``markup``)."""
        if not self.active:
            self._console.print(text, markup=markup, highlight=False)
            return
        with self._console.capture() as capture:
            self._console.print(text, markup=markup, highlight=False)
        self._draw(above=capture.get())

    def status(self, markup: str) -> None:
        """Replace the status line (rich markup), leaving the input as it is."""
        self._status = markup
        if self.active:
            self._draw()

    def _width(self) -> int:
        return max(self._console.width, 10)

    def _draw(self, above: str = "") -> None:
        """Redraw the status line and the prompt line, after printing ``above`` over them."""
        if not self.active:
            return
        width = self._width()
        frame = ["\r" + ERASE_LINE + UP + "\r" + ERASE_LINE] if self._drawn else []
        frame.append(above)
        frame.append(self._render_status(width))
        frame.append("\r\n")
        frame.append(self._render_input(width))
        self._drawn = True
        self._write("".join(frame))

    def _draw_input(self) -> None:
        if not self._drawn:
            self._draw()
        elif self.active:
            self._write("\r" + ERASE_LINE + self._render_input(self._width()))

    def _render_status(self, width: int) -> str:
        text = Text.from_markup(self._status)
        text.truncate(width - 1, overflow="ellipsis")
        with self._console.capture() as capture:
            self._console.print(text, end="", no_wrap=True, highlight=False)
        return capture.get()

    def _render_input(self, width: int) -> str:
        """The prompt and the part of the input around the cursor that fits, cursor placed."""
        prompt = self._question[0] if self._question is not None else PROMPT
        room = max(width - 1 - cell_len(prompt), 2)
        chars = self._buffer
        self._offset = min(self._offset, self._cursor)
        while cell_len("".join(chars[self._offset : self._cursor])) > room - 1:
            self._offset += 1
        shown: list[str] = []
        used = 0
        for char in chars[self._offset :]:
            size = get_character_cell_size(char)
            if used + size > room:
                break
            shown.append(char)
            used += size
        column = cell_len(prompt) + cell_len("".join(chars[self._offset : self._cursor]))
        return prompt + "".join(shown) + "\r" + (f"\x1b[{column}C" if column else "")

    def _write(self, text: str) -> None:
        out = self._console.file
        out.write(text)
        out.flush()

    # --- input ----------------------------------------------------------------------------------

    async def lines(self) -> AsyncIterator[str]:
        """Each line entered, until the terminal is given back."""
        while (line := await self._lines.get()) is not None:
            yield line

    async def ask(self, question: str) -> str:
        """Show ``question`` in the prompt's place and return the line typed as the answer."""
        async with self._asking:
            if not self.active:
                return ""
            if cell_len(question) > self._width() // 2:
                # A long question would wrap and break the two lines: print it, ask briefly.
                self.print(question.rstrip())
                question = "[y/N] " if question.rstrip().endswith("[y/N]") else "? "
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            saved = (self._buffer, self._cursor, self._offset)
            self._buffer, self._cursor, self._offset = [], 0, 0
            self._question = (question, future)
            self._draw_input()
            try:
                return await future
            finally:
                self._question = None
                self._buffer, self._cursor, self._offset = saved
                self._draw_input()

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:
            data = b""
        if not data:  # the terminal hung up
            self.stop()
            return
        for char in self._decoder.decode(data):
            self._key(char)
        self._draw_input()

    def _key(self, char: str) -> None:
        if self._escape:
            self._escape += char
            if _escape_done(self._escape):
                self._on_escape(self._escape)
                self._escape = ""
            return
        after_cr, self._after_cr = self._after_cr, char == "\r"
        if char == "\x1b":
            self._escape = char
        elif char == "\r" or (char == "\n" and not after_cr):
            self._enter()
        elif char in ("\x7f", "\b"):
            self._delete(self._cursor - 1)
        elif char == "\x04":  # Ctrl-D: end of input on an empty line, else delete
            if self._buffer:
                self._delete(self._cursor)
            elif self._question is not None:
                self._enter()
            else:
                self._lines.put_nowait("/q")
        elif char == "\x15":  # Ctrl-U
            del self._buffer[: self._cursor]
            self._cursor = 0
        elif char == "\x0b":  # Ctrl-K
            del self._buffer[self._cursor :]
        elif char == "\x17":  # Ctrl-W
            start = self._cursor
            while start > 0 and self._buffer[start - 1] == " ":
                start -= 1
            while start > 0 and self._buffer[start - 1] != " ":
                start -= 1
            del self._buffer[start : self._cursor]
            self._cursor = start
        elif char in CURSOR_KEYS:  # Ctrl-A, Ctrl-E, Ctrl-B, Ctrl-F
            self._move(CURSOR_KEYS[char] * (len(self._buffer) if char in "\x01\x05" else 1))
        elif char == "\x0c":  # Ctrl-L
            self._drawn = False
            self._draw()
        elif char >= " ":
            self._buffer.insert(self._cursor, char)
            self._cursor += 1

    def _on_escape(self, sequence: str) -> None:
        final = sequence[-1]
        if final == "D":
            self._move(-1)
        elif final == "C":
            self._move(1)
        elif final == "H" or sequence in ("\x1b[1~", "\x1b[7~"):
            self._move(-len(self._buffer))
        elif final == "F" or sequence in ("\x1b[4~", "\x1b[8~"):
            self._move(len(self._buffer))
        elif sequence == "\x1b[3~":
            self._delete(self._cursor)

    def _move(self, by: int) -> None:
        self._cursor = min(max(self._cursor + by, 0), len(self._buffer))

    def _delete(self, index: int) -> None:
        if 0 <= index < len(self._buffer):
            del self._buffer[index]
            if index < self._cursor:
                self._cursor -= 1

    def _enter(self) -> None:
        line = "".join(self._buffer)
        self._buffer, self._cursor, self._offset = [], 0, 0
        if self._question is not None:
            question, future = self._question
            self.print(question + line)
            if not future.done():
                future.set_result(line)
        else:
            self._lines.put_nowait(line)

    # --- log lines ------------------------------------------------------------------------------

    def _redirect_logging(self) -> None:
        # A log line written straight to stderr would land on the prompt line: while the terminal
        # is ours, stderr's log handlers print above the status line instead.
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler and handler.stream in (
                sys.stderr,
                sys.__stderr__,
            ):
                old = handler.setStream(_LinesAbove(self))
                self._log_streams.append((handler, old))

    def _restore_logging(self) -> None:
        for handler, stream in self._log_streams:
            handler.setStream(stream)
        self._log_streams.clear()


def _escape_done(sequence: str) -> bool:
    if len(sequence) < 2:
        return False
    if sequence[1] == "[":
        return len(sequence) > 2 and "@" <= sequence[-1] <= "~"
    if sequence[1] == "O":
        return len(sequence) > 2
    return True  # Alt and a key: ignored


class _LinesAbove(io.TextIOBase):
    """A text stream whose complete lines the terminal prints above its status line."""

    def __init__(self, terminal: Terminal) -> None:
        self._terminal = terminal
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._terminal.print(line)
        return len(text)


class TerminalKeys(SessionKeys):
    """The session's commands and text, read from the :class:`Terminal`'s prompt."""

    def __init__(self, scene: Scene, terminal: Terminal, stop: asyncio.Event) -> None:
        super().__init__(scene, terminal.print, stop)
        self._terminal = terminal

    async def run(self) -> None:
        self.say(HELP_LINE + "; Ctrl-D quits too")
        async for line in self._terminal.lines():
            await self.act(line.strip())
            if self.stopped:
                return


class ConsentQuestions:
    """A consent prompt (``PermissionPrompt``) that nothing draws over.

    Before the session the progress display is paused (``pause``) while each ``[y/N]`` question
    is asked and its answer read as a whole line; once the :class:`Terminal` runs, the question
    takes the prompt's place. ``y`` or ``yes`` grants, anything else refuses.
    """

    def __init__(
        self,
        pause: Callable[[], AbstractContextManager[None]],
        out: TextIO,
        fd: int | None = None,
    ) -> None:
        self._pause = pause
        self._out = out
        self._fd = sys.stdin.fileno() if fd is None else fd
        #: Set once the session's terminal runs: then questions are asked on its prompt.
        self.terminal: Terminal | None = None

    async def __call__(self, origin: str, devices: MediaDevices) -> MediaDevices:
        asked = [device for device in DEVICES if getattr(devices, device)]
        questions = [f"Allow {origin} to use your {device}? [y/N] " for device in asked]
        terminal = self.terminal
        answers: list[str] = []
        if terminal is not None and terminal.active:
            for question in questions:
                answers.append(await terminal.ask(question))
        else:
            with self._pause():
                for question in questions:
                    answers.append(await read_answer(self._fd, self._out, question))
        granted = [
            device
            for device, answer in zip(asked, answers, strict=True)
            if answer.strip().lower() in ("y", "yes")
        ]
        return MediaDevices("microphone" in granted, "camera" in granted)


async def read_answer(fd: int, out: TextIO, question: str) -> str:
    """Write ``question`` and read one line from ``fd`` (a terminal in canonical mode).

    The event loop watches the descriptor, so a connect timeout or Ctrl-C meanwhile is not kept
    waiting by a thread blocked in ``input()``. End of input answers "".
    """
    out.write(question)
    out.flush()
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        chunks.append(data)
        if (not data or b"\n" in data) and not answer.done():
            text = b"".join(chunks).split(b"\n", 1)[0]
            answer.set_result(text.decode("utf-8", "replace"))

    loop.add_reader(fd, readable)
    try:
        return await answer
    finally:
        loop.remove_reader(fd)
