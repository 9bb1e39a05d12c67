"""Build dpkit's sdist and wheel as a release would, and install them into fresh venvs.

The sdist is built from the source tree, and the wheel from the unpacked sdist (as ``python -m
build`` does), so a file the sdist leaves out breaks the wheel too and nothing stale from a
``build/`` directory leaks into it. Packages come from the machine's package index (PyPI and the
local wheel cache pip is configured with); nothing else is reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_REQUIREMENTS = ("setuptools>=77",)
INSTALL_TIMEOUT_S = 600


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Venv:
    """A virtual environment of its own, with dpkit installed into it."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def dpkit(self) -> Path:
        return self.root / "bin" / "dpkit"

    def installed(self) -> set[str]:
        """The names of the distributions installed here, lower case with ``-``."""
        listing = run([str(self.python), "-m", "pip", "list", "--format=freeze"])
        return {line.split("==")[0].lower().replace("_", "-") for line in listing.splitlines()}


def run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``command``; its output, or an AssertionError that shows it."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def make_venv(root: Path, *requirements: str) -> Venv:
    """A new venv at ``root`` (without this test run's packages), with ``requirements``."""
    run([base_python(), "-m", "venv", str(root)])
    venv = Venv(root)
    if requirements:
        run([str(venv.python), "-m", "pip", "install", "--quiet", *requirements])
    return venv


def base_python() -> str:
    """The interpreter this run's venv was made from (a venv made from a venv is fine too)."""
    return getattr(sys, "_base_executable", sys.executable)


def build(out: Path) -> Dist:
    """The sdist from the source tree, then the wheel from the unpacked sdist."""
    builder = make_venv(out / "build-venv", *BUILD_REQUIREMENTS)
    sdist_dir, wheel_dir, unpacked = out / "sdist", out / "wheel", out / "unpacked"
    for directory in (sdist_dir, wheel_dir, unpacked):
        directory.mkdir(parents=True)
    backend = "from setuptools import build_meta as backend; import sys; "
    name = run(
        [str(builder.python), "-c", backend + f"print(backend.build_sdist({str(sdist_dir)!r}))"],
        cwd=REPO,
        env=_quiet_env(),
    ).split()[-1]
    sdist = sdist_dir / name
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (source,) = unpacked.iterdir()
    name = run(
        [str(builder.python), "-c", backend + f"print(backend.build_wheel({str(wheel_dir)!r}))"],
        cwd=source,
        env=_quiet_env(),
    ).split()[-1]
    return Dist(sdist=sdist, wheel=wheel_dir / name)


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}
