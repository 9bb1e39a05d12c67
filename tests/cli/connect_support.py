"""Support for the ``dpkit connect`` tests: a pseudo-terminal and a tiny terminal emulator.

:class:`PtyClient` runs ``dpkit`` in a process of its own with a pty as its stdin, stdout and
stderr; the test types into the pty as a person would and every byte written back goes through
:class:`Screen`, a minimal terminal that understands the few control sequences rich and dpkit
emit, so the test can check the screen the person is left looking at.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import os
import re
import struct
import sys
import termios
from collections.abc import Callable
from pathlib import Path

from tests.support import UNIT

#: ``dpkit connect`` options for this machine's real microphone alone (the tests' virtual sound
#: card gives it one; there is no camera to ask about).
REAL_MICROPHONE_ARGS = ("--devices", "system", "--request", "microphone", "--require", "microphone")


def words(text: str) -> str:
    """Text with every run of whitespace made one space, so a wrapped line compares whole."""
    return " ".join(text.split())


WIDTH = 120
HEIGHT = 40
CSI = re.compile(r"\x1b\[([0-9;?]*)([ -/]*)([@-~])")


class Screen:
    """A terminal of fixed width and unbounded height: text, a cursor and a few controls.

    It knows CR, LF, BS, TAB, ``ESC 7``/``ESC 8``, and the CSI sequences for cursor movement
    (A B C D G H), erase in line (K) and display (J); colours and modes are ignored. A line that
    reaches the right margin wraps, as a real terminal's does.
    """

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.width = width
        self.height = height
        self.rows: list[list[str]] = [[]]
        self.row = 0
        self.col = 0
        self._saved = (0, 0)
        self._pending = ""

    def feed(self, text: str) -> None:
        text = self._pending + text
        self._pending = ""
        i = 0
        while i < len(text):
            char = text[i]
            if char == "\x1b":
                consumed = self._escape(text, i)
                if consumed == 0:  # an incomplete sequence: wait for the rest
                    self._pending = text[i:]
                    return
                i += consumed
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._move_to(self.row + 1, self.col)
            elif char == "\b":
                self.col = max(0, self.col - 1)
            elif char == "\t":
                self.col = min(self.width - 1, (self.col // 8 + 1) * 8)
            elif char >= " " and char != "\x7f":
                self._put(char)
            i += 1

    def _escape(self, text: str, i: int) -> int:
        if i + 1 >= len(text):
            return 0
        kind = text[i + 1]
        if kind == "7":
            self._saved = (self.row, self.col)
            return 2
        if kind == "8":
            self._move_to(*self._saved)
            return 2
        if kind == "]":  # OSC: up to BEL or ESC backslash
            end = re.compile(r"\x07|\x1b\\").search(text, i + 2)
            return 0 if end is None else end.end() - i
        if kind != "[":
            return 2
        match = CSI.match(text, i)
        if match is None:  # cut off at the end of what arrived, or not a CSI sequence at all
            return 0 if re.fullmatch(r"\x1b\[[0-9;?]*[ -/]*", text[i:]) else 2
        self._csi(match.group(1), match.group(3))
        return match.end() - i

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # modes: cursor visibility and the like
        numbers = [int(part) if part else 0 for part in params.split(";")] if params else []
        n = numbers[0] if numbers else 0
        if final == "A":
            self._move_to(max(self._top(), self.row - max(n, 1)), self.col)
        elif final == "B":
            self._move_to(self.row + max(n, 1), self.col)
        elif final == "C":
            self.col = min(self.width - 1, self.col + max(n, 1))
        elif final == "D":
            self.col = max(0, self.col - max(n, 1))
        elif final == "G":
            self.col = min(self.width - 1, max(n, 1) - 1)
        elif final == "H":
            row = numbers[0] if numbers else 1
            col = numbers[1] if len(numbers) > 1 else 1
            self._move_to(self._top() + max(row, 1) - 1, max(col, 1) - 1)
        elif final == "K":
            line = self.rows[self.row]
            if n == 0:
                del line[self.col :]
            elif n == 1:
                line[: self.col + 1] = [" "] * min(len(line), self.col + 1)
            else:
                line.clear()
        elif final == "J" and n == 0:
            del self.rows[self.row][self.col :]
            del self.rows[self.row + 1 :]

    def _top(self) -> int:
        return max(0, len(self.rows) - self.height)

    def _move_to(self, row: int, col: int) -> None:
        while len(self.rows) <= row:
            self.rows.append([])
        self.row, self.col = row, col

    def _put(self, char: str) -> None:
        if self.col >= self.width:
            self._move_to(self.row + 1, 0)
        line = self.rows[self.row]
        if len(line) < self.col:
            line.extend(" " * (self.col - len(line)))
        if len(line) == self.col:
            line.append(char)
        else:
            line[self.col] = char
        self.col += 1

    @property
    def lines(self) -> list[str]:
        """Every line, trailing spaces removed."""
        return ["".join(row).rstrip() for row in self.rows]

    def line(self, offset: int = 0) -> str:
        """The cursor's line (``offset`` 0), or the one ``-offset`` lines above it."""
        row = self.row + offset
        return self.lines[row] if 0 <= row < len(self.rows) else ""

    def dump(self) -> str:
        return "\n".join(
            f"{'>' if i == self.row else ' '} |{line}" for i, line in enumerate(self.lines)
        )


class PtyClient:
    """``dpkit`` on a pseudo-terminal: what the test types goes in, what it draws is kept."""

    def __init__(self, master: int, slave: int, process: asyncio.subprocess.Process) -> None:
        self.master = master
        self.slave = slave
        self.process = process
        self.screen = Screen()
        self.output = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._changed = asyncio.Event()
        os.set_blocking(master, False)
        asyncio.get_running_loop().add_reader(master, self._readable)

    @classmethod
    async def spawn(cls, *args: str, state_dir: Path) -> PtyClient:
        """``dpkit ARGS`` on a new pty, its consent decisions kept under ``state_dir``."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))
        environ = {key: value for key, value in os.environ.items() if not key.startswith("DPKIT_")}
        environ |= {
            "COLUMNS": str(WIDTH),
            "LINES": str(HEIGHT),
            "TERM": "xterm-256color",
            "XDG_STATE_HOME": str(state_dir),
            "PYTHONUNBUFFERED": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dpkit",
            *args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=environ,
            start_new_session=True,
        )
        return cls(master, slave, process)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave descriptor is closed
            asyncio.get_running_loop().remove_reader(self.master)
            return
        text = self._decoder.decode(data)
        self.output += text
        self.screen.feed(text)
        self._changed.set()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def wait_for(
        self, condition: Callable[[Screen], bool], what: str, within: float = 30 * UNIT
    ) -> None:
        """Wait until ``condition`` holds for the screen, each time more output arrives."""
        try:
            async with asyncio.timeout(within):
                while not condition(self.screen):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what}; the screen:\n{self.screen.dump()}") from None

    async def wait_for_output(self, pattern: str, after: int, what: str) -> None:
        """Wait until ``pattern`` appears in the raw output written after offset ``after``."""
        compiled = re.compile(pattern)
        await self.wait_for(lambda _s: compiled.search(self.output, after) is not None, what)

    async def quiet(self, seconds: float) -> str:
        """What arrives in the next ``seconds``: for checking that nothing is redrawn."""
        mark = len(self.output)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.process.wait()
        return self.output[mark:]

    async def exit_code(self) -> int:
        async with asyncio.timeout(30 * UNIT):
            code = await self.process.wait()
        self._readable()  # what was written just before the exit
        while True:
            before = len(self.output)
            self._readable()
            if len(self.output) == before:
                return code

    def local_modes(self) -> int:
        """The terminal's local modes now (ECHO, ICANON...)."""
        return int(termios.tcgetattr(self.slave)[3])

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)
