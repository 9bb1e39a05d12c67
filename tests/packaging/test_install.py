"""dpkit as a user installs it: what the sdist and the wheel hold, and what each install brings.

These build the real sdist and wheel and install them into new virtual environments with pip,
from the machine's package index: nothing here imports dpkit from the source tree.
"""

from __future__ import annotations

import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.packaging.installed import REPO, Dist, Venv, make_venv

pytestmark = pytest.mark.timeout(900)

SERVER_ONLY = {"espeakng-loader"}
AUDIO_ONLY = {"sounddevice"}


@pytest.fixture(scope="module")
def client_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """``pip install dpkit``: no extras."""
    return make_venv(tmp_path_factory.mktemp("client") / "venv", str(dist.wheel))


def wheel_names(dist: Dist) -> list[str]:
    with zipfile.ZipFile(dist.wheel) as wheel:
        return wheel.namelist()


def sdist_names(dist: Dist) -> list[str]:
    with tarfile.open(dist.sdist) as sdist:
        return [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]


def wheel_metadata(dist: Dist) -> str:
    with zipfile.ZipFile(dist.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return wheel.read(name).decode()


def test_neither_package_holds_any_of_the_web_sdk(dist: Dist) -> None:
    """The Web SDK is under its vendor's licence: fetched where it runs, never packaged."""
    for name in [*wheel_names(dist), *sdist_names(dist)]:
        assert "smwebsdk" not in name.lower(), name
        assert "node_modules" not in name, name
    with zipfile.ZipFile(dist.wheel) as wheel:
        for name in wheel.namelist():
            assert b"@soulmachines/smwebsdk v" not in wheel.read(name), name


def test_the_wheel_carries_the_licence_and_metadata(dist: Dist) -> None:
    names = wheel_names(dist)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    metadata = wheel_metadata(dist)
    assert "License-Expression: MIT" in metadata
    assert "Provides-Extra: server" in metadata
    assert "Provides-Extra: audio" in metadata
    assert 'Requires-Dist: espeakng-loader>=0.2; extra == "server"' in metadata
    assert 'Requires-Dist: sounddevice>=0.4; extra == "audio"' in metadata
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    unconditional = [line for line in requires if "extra ==" not in line]
    assert not [line for line in unconditional if "espeakng" in line or "sounddevice" in line]
    assert "dpkit/py.typed" in names
    assert "dpkit/web/index.html" in names
    assert "dpkit/personas/ava/manifest.json" in names


def tracked_files(*directories: str) -> set[str]:
    listing = subprocess.run(
        ["git", "ls-files", *directories], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(listing.stdout.split())


def test_the_sdist_holds_docs_benchmarks_tests_and_scripts(dist: Dist) -> None:
    names = set(sdist_names(dist))
    expected = tracked_files("docs", "benchmarks", "tests", "scripts", "src")
    assert expected, "git ls-files found nothing"
    missing = expected - names
    assert not missing, f"the sdist leaves out {sorted(missing)}"
    assert {"LICENSE", "README.md", "pyproject.toml", ".ci/run"} <= names


def test_plain_install_is_the_client_without_the_server_voice_or_portaudio(
    client_venv: Venv,
) -> None:
    installed = client_venv.installed()
    assert "dpkit" in installed
    assert {"aiortc", "aiohttp", "av"} <= installed
    assert not installed & SERVER_ONLY
    assert not installed & AUDIO_ONLY


def test_the_client_imports_nothing_of_the_server(client_venv: Venv) -> None:
    script = (
        "import sys\n"
        "from dpkit import Scene, SyntheticDevices, NoDevices, RetryOptions\n"
        "import dpkit.client, dpkit.media.capture, dpkit.media.files, dpkit.media.synthetic\n"
        "loaded = [m for m in sys.modules if m.startswith('dpkit.server')]\n"
        "print('server modules:', loaded)\n"
        "assert not loaded\n"
    )
    result = subprocess.run(
        [str(client_venv.python), "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "server modules: []" in result.stdout


def test_serve_without_the_server_extra_names_it(client_venv: Venv, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(client_venv.dpkit), "serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "pip install 'dpkit[server]'" in output
    assert "Traceback" not in output
    assert not (tmp_path / "data").exists(), "a server that cannot start made its data dir"


def test_help_and_version_work_without_extras(client_venv: Venv) -> None:
    for args in (["--version"], ["--help"], ["connect", "--help"], ["serve", "--help"]):
        result = subprocess.run(
            [str(client_venv.dpkit), *args], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
