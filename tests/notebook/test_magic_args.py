"""Argument parsing of the magics: specs they build, and usage errors instead of tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError

from jupyter_agentbuild.magics.arguments import HelpShown, parse_cell, parse_line
from jupyter_agentbuild.magics.cell_spec import build_spec, notebook_dir
from jupyter_agentbuild.magics.commands import COMMANDS


def spec_for(line: str, script: str = "make", **kw: object) -> dict[str, object]:
    return build_spec(parse_cell(line), script, **kw)  # type: ignore[arg-type]


def test_minimal_cell() -> None:
    assert spec_for("") == {"steps": [{"name": "cell", "run": "make"}]}


def test_every_cell_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.txt").write_text("hello")
    (tmp_path / "b.cfg").write_text("x=1")
    line = (
        "--name site --workspace web --file conf/a.txt b.cfg --env A=1 'B=two words' SECRET "
        "--provider local --timeout 90 --artifacts 'dist/**' out/*.txt "
        "--preview 'python -m http.server 8000' --port 8000 --preview-path /index.html --wait"
    )
    spec = spec_for(line, "npm run build", environ={"SECRET": "s3"})
    assert spec == {
        "steps": [{"name": "site", "run": "npm run build"}],
        "name": "site",
        "workspace": "web",
        "files": {"conf/a.txt": "hello", "b.cfg": "x=1"},
        "env": {"A": "1", "B": "two words", "SECRET": {"value": "s3", "secret": True}},
        "provider": "local",
        "timeout": 90.0,
        "artifacts": {"paths": ["dist/**", "out/*.txt"]},
        "preview": {"command": "python -m http.server 8000", "port": 8000, "path": "/index.html"},
    }
    assert parse_cell(line).wait


def test_workspace_defaults_to_the_notebook_directory() -> None:
    assert spec_for("", notebook_path="proj/site/index.ipynb")["workspace"] == "proj/site"
    assert spec_for("", notebook_path="top.ipynb")["workspace"] == "."
    assert "workspace" not in spec_for("", notebook_path="/abs/elsewhere.ipynb")
    assert "workspace" not in spec_for("--no-workspace", notebook_path="proj/x.ipynb")
    assert spec_for("--workspace other", notebook_path="proj/x.ipynb")["workspace"] == "other"
    assert notebook_dir(None) is None


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("--bogus", "unrecognized arguments: --bogus"),
        ("--timeout soon", "not a number of seconds"),
        ("--timeout -1", "must be more than 0"),
        ("--port 8000", "--port and --preview-path need --preview"),
        ("--preview x --port 99999", "not a port number"),
        ("--provider moon", "invalid choice: 'moon'"),
        ("--workspace a --no-workspace", "not allowed with argument"),
        ("--name 'unclosed", "No closing quotation"),
    ],
)
def test_bad_cell_arguments_are_usage_errors(line: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_cell(line)
    assert fragment in str(info.value)
    assert "usage: %%agentbuild" in str(info.value)


def test_bad_cell_content_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="the cell is empty"):
        spec_for("", "  \n")
    with pytest.raises(UsageError, match="no such file"):
        spec_for(f"--file {tmp_path / 'missing'}")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="only text files"):
        spec_for(f"--file {tmp_path / 'bin'}")
    with pytest.raises(UsageError, match="is not set in this kernel"):
        spec_for("--env NOPE_NOT_SET", environ={})


def test_absolute_file_paths_are_sent_by_name(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    assert spec_for(f"--file {tmp_path / 'x.txt'}")["files"] == {"x.txt": "x"}


def test_help_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HelpShown):
        parse_cell("--help")
    assert "%%agentbuild [--name N]" in capsys.readouterr().out


def test_line_subcommands() -> None:
    assert parse_line("list").command == "list"
    opts = parse_line("list --status running --limit 5")
    assert (opts.status, opts.limit) == ("running", 5)
    opts = parse_line("logs abc --follow --tail 20")
    assert (opts.id, opts.follow, opts.tail) == ("abc", True, 20)
    for name in ("show", "cancel", "delete", "artifacts"):
        opts = parse_line(f"{name} b1")
        assert (opts.command, opts.id) == (name, "b1")
    assert parse_line("preview b1 --stop").stop
    assert parse_line("help").command == "help"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("", "missing subcommand"),
        ("frobnicate", "invalid choice: 'frobnicate'"),
        ("show", "the following arguments are required: id"),
        ("logs b1 --tail 0", "not a positive integer"),
        ("list --limit x", "not a positive integer"),
        ("cancel a b", "unrecognized arguments: b"),
    ],
)
def test_bad_line_usage(line: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_line(line)
    assert fragment in str(info.value)
    assert "usage: %agentbuild list" in str(info.value)


SUBCOMMAND_LINES = [
    "help",
    "list",
    "show b",
    "logs b",
    "cancel b",
    "delete b",
    "artifacts b",
    "preview b",
]


def test_every_subcommand_has_a_command_and_every_command_a_subcommand() -> None:
    parsed = [parse_line(line).command for line in SUBCOMMAND_LINES]
    assert sorted(parsed) == sorted(COMMANDS)
