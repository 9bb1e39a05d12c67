"""Every numeric option and URL is validated where it enters: a usage error (exit 2) naming it."""

from __future__ import annotations

import pytest

from dpkit.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "--max-events", "-1"], "argument --max-events: -1 must be greater than 0"),
        (["watch", "--max-events", "0"], "argument --max-events: 0 must be greater than 0"),
        (["watch", "--max-events", "many"], "argument --max-events: 'many' is not a whole number"),
        (["watch", "notaurl"], "argument url: 'notaurl' is not an http:// or https:// URL"),
        (["sessions", "list", "--limit", "-1"], "argument --limit: -1 is not from 1 to 100000"),
        (["sessions", "list", "--limit", "1e30"], "argument --limit: '1e30' is not a whole number"),
        (["sessions", "list", "--limit", "10" * 20], "is not from 1 to 100000"),
        (["sessions", "show", "a\x1b[2Jb"], "argument SESSION_ID: an id 'a\\x1b[2Jb' has control"),
        (["sessions", "show", "x" * 129], "argument SESSION_ID: an id is longer than 128"),
        (["keys", "add", "--url", "notaurl"], "argument --url: 'notaurl' is not an http:// or"),
        (["keys", "list", "--url", "ftp://x"], "argument --url: 'ftp://x' is not an http:// or"),
        (["keys", "add", "--label", ""], "argument --label: a label must not be empty"),
        (["keys", "add", "--label", "a\nb"], "argument --label: a label 'a\\nb' has control"),
        (["keys", "remove", "a b"], "argument KEY_ID: an id has no spaces"),
        (["serve", "--port", "70000"], "argument --port: 70000 is not a port (0 to 65535)"),
        (["serve", "--port", "-1"], "argument --port: -1 is not a port (0 to 65535)"),
        (["serve", "--port", "http"], "argument --port: 'http' is not a port number"),
        (["serve", "--capacity", "0"], "argument --capacity: 0 must be greater than 0"),
        (["serve", "--capacity", "2.5"], "argument --capacity: '2.5' is not a whole number"),
        (["serve", "--public-url", "dp.example"], "argument --public-url: 'dp.example' is not"),
        (["demo", "--port", "65536"], "argument --port: 65536 is not a port (0 to 65535)"),
        (["orchestrator", "--port", "99999"], "argument --port: 99999 is not a port"),
        (["permissions", "reset", "--origin", "nohost"], "argument --origin: 'nohost' is not a"),
        (["permissions", "reset", "--origin", "http://h:99999"], "'http://h:99999' has a bad port"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad value exits 2 with argparse's usage line and a message naming the option."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
