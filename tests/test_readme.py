"""Issue 20: the README's commands run as written. Every `ticketkit ...` line of its bash blocks is parsed by the
real command (flags, choices, types, callbacks), a renamed or deprecated flag fails it, the recipes it names
exist, and the cheap commands run."""
import os
import re
import shlex

import click
import pytest
from click.testing import CliRunner

from conftest import REPO
from ticketkit.cli import main
from ticketkit.threads import ENV, POOL_ENV


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):  # `pip install ... && ticketkit transfer ...`
                part = part.split(" #")[0].strip()
                if part.startswith("ticketkit ") or part == "ticketkit":
                    lines.append(part)
    return lines


def leaf(args: list[str]):
    """(command name, command, its args): main's subcommand, and for `sweep` its subcommand or the implicit run."""
    i = next(i for i, a in enumerate(args) if not a.startswith("-"))
    name, cmd, rest = args[i], main.commands[args[i]], args[i + 1:]
    if isinstance(cmd, click.Group):
        if rest and rest[0] in cmd.commands:
            name, rest = rest[0], rest[1:]
        else:  # `ticketkit sweep RECIPE` is `ticketkit sweep run RECIPE`
            name = "run"
        cmd = cmd.commands[name]
    return name, cmd, rest


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 20 and {c.split()[1] for c in COMMANDS} >= {"find", "transfer", "report", "sweep", "push"}


@pytest.mark.parametrize("line", COMMANDS)
def test_a_readme_command_parses_as_written(line, monkeypatch, capfd):
    for k in (ENV, *POOL_ENV):  # --threads sets these while parsing: restore them afterwards
        monkeypatch.setenv(k, os.environ.get(k, "1"))
    args = shlex.split(line)[1:]
    name, cmd, rest = leaf(args)
    cmd.make_context(name, list(rest))  # unknown flags, bad choices and types raise here
    assert "deprecated" not in capfd.readouterr().err, f"{line}: uses a deprecated flag name"
    r = CliRunner().invoke(main, [*args, "--help"])
    assert r.exit_code == 0, f"{line}\n{r.output}"
    for a in rest:
        if a.endswith(".toml"):
            assert (REPO / a).is_file(), f"{line}: {a} does not exist"


def test_the_check_catches_a_renamed_flag():
    with pytest.raises(click.NoSuchOption):
        name, cmd, rest = leaf(["find", "imdb", "cnn", "--levles", "3"])
        cmd.make_context(name, rest)


@pytest.mark.parametrize("argv", [["recipes"], ["ls"], ["--help"], ["--version"]])
def test_the_cheap_readme_commands_run(argv, tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETKIT_STORE", str(tmp_path))
    assert any(c.split()[1:] == argv[:1] or argv[0].startswith("-") for c in COMMANDS)
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 0, r.output
