"""Server settings from defaults, a TOML file, DPKIT_* variables and arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpkit.errors import ConfigurationError
from dpkit.server import PersonaSettings, Settings


def test_defaults_are_the_embedded_default() -> None:
    """With nothing given: loopback, port 8080, 640x480 at 15 fps, ICE on loopback."""
    settings = Settings.load(environ={})
    assert (settings.host, settings.port, settings.capacity) == ("127.0.0.1", 8080, 4)
    assert settings.persona == PersonaSettings("Ava", 640, 480, 15.0)
    assert settings.effective_ice_addresses == ("127.0.0.1",)
    assert settings.data_dir.name == "dpkit"


def test_precedence_is_file_then_environment_then_arguments(tmp_path: Path) -> None:
    """A later source overrides an earlier one, field by field."""
    config = tmp_path / "dpkit.toml"
    config.write_text(
        '[server]\nport = 9000\ncapacity = 3\nice_addresses = ["127.0.0.1"]\n'
        "[server.persona]\nvideo_width = 320\nvideo_height = 240\n"
    )
    environ = {"DPKIT_CAPACITY": "5", "DPKIT_PERSONA_VIDEO_FPS": "10", "DPKIT_LOG_TO_SERVER": "yes"}
    settings = Settings.load(config, environ, port=9100)
    assert (settings.port, settings.capacity, settings.log_to_server) == (9100, 5, True)
    assert settings.ice_addresses == ("127.0.0.1",)
    assert (settings.persona.video_width, settings.persona.video_fps) == (640, 10.0)


def test_environment_lists_are_comma_separated() -> None:
    """DPKIT_ICE_ADDRESSES takes several addresses."""
    settings = Settings.load(environ={"DPKIT_ICE_ADDRESSES": "127.0.0.1, ::1"})
    assert settings.ice_addresses == ("127.0.0.1", "::1")


def test_non_loopback_host_gathers_on_every_interface() -> None:
    """Serving on a public address leaves ICE on aioice's default interfaces."""
    assert Settings(host="0.0.0.0").effective_ice_addresses is None
    assert Settings(host="::1").effective_ice_addresses == ("::1",)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DPKIT_PORT": "eighty"}, "port must be an integer, got 'eighty'"),
        ({"DPKIT_PORT": "70000"}, "port must be in 0..65535"),
        ({"DPKIT_CAPACITY": "0"}, "capacity must be at least 1"),
        ({"DPKIT_ICE_ADDRESSES": "localhost"}, "not an IP address: 'localhost'"),
        ({"DPKIT_LOG_TO_SERVER": "maybe"}, "log_to_server must be true or false"),
        ({"DPKIT_PERSONA_VIDEO_WIDTH": "641"}, "persona video size must be even"),
        ({"DPKIT_PERSONA_VIDEO_FPS": "120"}, "video_fps must be in (0, 60]"),
        ({"DPKIT_TOKEN_TTL_S": "-1"}, "token_ttl_s must be positive"),
        ({"DPKIT_FEED_HEARTBEAT_S": "0"}, "feed_heartbeat_s must be positive"),
        ({"DPKIT_NPM_REGISTRY": "ftp://registry.example"}, "npm_registry"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    """Every bad value stops with a ConfigurationError naming the setting."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(environ=environ)
    assert message in caught.value.message


def test_bad_config_files_are_reported(tmp_path: Path) -> None:
    """A missing file, bad TOML and unknown keys each get their own message."""
    with pytest.raises(ConfigurationError, match="config file not found"):
        Settings.load(tmp_path / "missing.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        Settings.load(broken, {})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigurationError, match="unknown settings: prot"):
        Settings.load(unknown, {})
