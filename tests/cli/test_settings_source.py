"""One settings source for every command: the data directory as ``dpkit serve`` finds it, read-only
commands that create nothing, and the banner's hints working exactly as printed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dpkit.cli import main
from dpkit.server import DpkitServer, Settings
from dpkit.server.keys import KeyStore
from dpkit.server.settings import default_data_dir, resolve_data_dir
from tests.cli.helpers import environment, run_dpkit, serving_cli
from tests.served import write_config
from tests.support import UNIT, ServerFactory, spawn_dpkit

#: Small, quick persona video for the servers these tests start.
SMALL = {
    "DPKIT_PERSONA_VIDEO_WIDTH": "160",
    "DPKIT_PERSONA_VIDEO_HEIGHT": "120",
    "DPKIT_CAPACITY": "1",
}


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and modification time."""
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
    }


@pytest.mark.parametrize("given_as", ["--data-dir", "DPKIT_DATA_DIR", "--config"])
async def test_the_banner_hints_work_as_printed(tmp_path: Path, given_as: str) -> None:
    """Each hint of `dpkit serve`'s banner (keys list, watch, connect) runs as printed and works,
    whether the data dir (and admin token) come from --data-dir, DPKIT_DATA_DIR or --config."""
    data_dir = tmp_path / "the data"  # a space: the hints must quote it
    home = tmp_path / "home"  # empty: the default data directory does not exist
    variables = dict(SMALL)
    serve_args = ["--port", "0", "--ice-address", "127.0.0.1"]
    if given_as == "--data-dir":
        serve_args += ["--data-dir", str(data_dir)]
    elif given_as == "DPKIT_DATA_DIR":
        variables["DPKIT_DATA_DIR"] = str(data_dir)
    else:
        config = tmp_path / "dpkit.toml"
        # With the admin token in the file too: the watch hint must carry --config.
        write_config(config, {"data_dir": str(data_dir), "admin_token": "the-file's-token"})
        serve_args += ["--config", str(config)]
    # The hints are run where a user would run them: no DPKIT_* variable of the server's.
    hint_environ = environment(home)
    async with serving_cli(*serve_args, environ=environment(home, **variables)) as banner:
        hints = banner.hints
        assert set(hints) == {"API key", "connect with", "watch with"}, banner.lines
        page_key = KeyStore.load(data_dir).page_key()
        assert page_key is not None

        code, out, err = await run_dpkit(*hints["API key"][1:], environ=hint_environ)
        assert code == 0, err
        # The whole key on a line of its own, at 80 columns.
        assert f"  API key:      {page_key.api_key(banner.url + '/api/token')}" in out.splitlines()

        watch = await spawn_dpkit(
            *hints["watch with"][1:], "--json", "--max-events", "2", environ=hint_environ
        )
        assert watch.stderr is not None
        # Subscribed once it says so (the server subscribes before answering).
        first = await asyncio.wait_for(watch.stderr.readline(), 30 * UNIT)
        assert b"following" in first, first
        code, out, err = await run_dpkit(
            *hints["connect with"][1:],
            "--duration",
            "0.5",
            "--devices",
            "synthetic",
            environ=hint_environ,
        )
        assert code == 0, err
        watched, watch_err = await asyncio.wait_for(watch.communicate(), 30 * UNIT)
        assert watch.returncode == 0, watch_err.decode()
        events = [json.loads(line) for line in watched.decode().splitlines()]
        assert [event["type"] for event in events] == ["opened", "state"]


def test_every_command_finds_the_data_dir_as_serve_does(tmp_path: Path) -> None:
    """resolve_data_dir gives Settings.load's data_dir: flag over DPKIT_DATA_DIR over file."""
    config = tmp_path / "dpkit.toml"
    write_config(config, {"data_dir": str(tmp_path / "from-file")})
    flag = tmp_path / "from-flag"
    environ = {"DPKIT_DATA_DIR": str(tmp_path / "from-env")}
    cases = [
        ({}, None, None, default_data_dir(), "the default"),
        ({}, config, None, tmp_path / "from-file", f"the config file {config}"),
        (environ, config, None, tmp_path / "from-env", "DPKIT_DATA_DIR"),
        (environ, config, flag, flag, "--data-dir"),
    ]
    for env, config_file, given, expected, source in cases:
        served = Settings.load(config_file, env, data_dir=given).data_dir
        resolved = resolve_data_dir(given, config_file=config_file, environ=env)
        assert (served, resolved.value, resolved.source) == (expected, expected, source)


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "list"],
        ["keys", "add"],
        ["keys", "remove", "abc"],
        ["sessions", "list"],
        ["sessions", "show", "node-1-abc"],
        ["watch"],
    ],
)
def test_a_missing_data_dir_is_named_and_never_created(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--data-dir /typo: a message naming it and the serve that would make it; nothing created."""
    typo = tmp_path / "typo"
    assert main([*argv, "--data-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert (
        f"no dpkit data directory at {typo}; start `dpkit serve --data-dir {typo}` once, "
        "or check the path"
    ) in err
    assert not typo.exists()


def test_a_missing_data_dir_from_the_environment_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DPKIT_DATA_DIR, as serve reads it, is where keys list looks, and the error says so."""
    monkeypatch.setenv("DPKIT_DATA_DIR", str(tmp_path / "elsewhere"))
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert f"no dpkit data directory at {tmp_path / 'elsewhere'}" in err
    assert "(the data directory comes from DPKIT_DATA_DIR)" in err
    assert not (tmp_path / "elsewhere").exists()


async def test_reading_commands_change_nothing_in_the_data_dir(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """keys list, sessions list and show leave a stopped server's data dir exactly as it was."""
    from dpkit import Scene

    server: DpkitServer = await start_server()
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    session_id = await scene.connect()
    await scene.disconnect()
    await server.stop()
    data_dir = server.settings.data_dir
    before = tree(data_dir)
    home = environment(tmp_path / "home")
    for argv in (
        ["keys", "list"],
        ["keys", "list", "--json"],
        ["sessions", "list"],
        ["sessions", "list", "--json"],
        ["sessions", "show", session_id[:12]],
    ):
        code, out, err = await run_dpkit(*argv, "--data-dir", str(data_dir), environ=home)
        assert code == 0, (argv, err)
        assert out
    assert tree(data_dir) == before
