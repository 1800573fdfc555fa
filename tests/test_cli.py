"""The command line as a person uses it (issue 20): --quiet and --json everywhere, choices and defaults in --help,
environment variables declared, one error style with an exit code per kind, documented in the README."""
import json
import re

import click
import pytest

from conftest import REPO, run_cli
from ticketkit.cli import build_find_config, main
from ticketkit.cliopts import EXIT_CODES


def leaf_commands(group=main, prefix="ticketkit"):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from leaf_commands(cmd, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", cmd


def test_every_command_takes_quiet_and_json():
    names = {}
    for path, cmd in leaf_commands():
        opts = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        names[path] = {"--quiet", "--json"} <= opts
    assert len(names) >= 11 and all(names.values()), [p for p, ok in names.items() if not ok]


@pytest.mark.parametrize("argv", [["ls"], ["recipes"]])
def test_cheap_commands_run_with_quiet_and_json(argv, tmp_path):
    (tmp_path / "s").mkdir()
    p = run_cli(*argv, "--quiet", "--json", env={"TICKETKIT_STORE": str(tmp_path / "s")})
    json.loads(p.stdout)
    assert p.stderr == ""


def test_verify_takes_quiet_and_json_and_an_empty_store_is_one_line(tmp_path):
    """verify accepts both flags; with nothing to verify it is an input error (issue 19), one line, exit 3."""
    (tmp_path / "s").mkdir()
    p = run_cli("verify", "--quiet", "--json", env={"TICKETKIT_STORE": str(tmp_path / "s")}, check=False)
    assert p.returncode == 3 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1
    assert "nothing to verify" in p.stderr


def test_help_shows_defaults_choices_and_env_vars():
    find = run_cli("find", "--help").stdout
    for text in ("[default: (20)]", "--scope [local|global]", "--schedule [iterative|oneshot|oneshot-levels]",
                 "--precision [auto|fp32|bf16]", "--pooling [mean|max]", "random-prune|random-prune-rows",
                 "--rewind [init|epoch:K|step:K|final]", "TICKETKIT_STORE", "TICKETKIT_DATA_DIR", "TICKETKIT_CACHE",
                 "TICKETKIT_MALLOC"):
        assert text in find, text
    transfer = run_cli("transfer", "--help").stdout
    for text in ("--to [ag_news|imdb|sst2|yelp2|NAME]", "--arch [cnn|lstm|transformer]", "[default: (3)]", "[default: (20)]", "TICKETKIT_STORE"):
        assert text in transfer, text
    assert "TICKETKIT_DEBUG" in run_cli("--help").stdout
    push = run_cli("push", "--help").stdout
    assert "hf auth login" in push and "huggingface-cli" not in push


def test_flags_override_a_recipe_only_when_given(tmp_path):
    """--help shows the dataclass default, but an absent flag is still None: the recipe's epochs stay."""
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nepochs = 2\n")
    for argv, epochs in ((["--recipe", str(recipe)], 2), (["--recipe", str(recipe), "--epochs", "7"], 7)):
        ctx = main.commands["find"].make_context("find", argv)
        flags = {k: v for k, v in ctx.params.items() if k.startswith("cfg__")}
        assert build_find_config(ctx.params["recipe"], None, None, flags).train.epochs == epochs


def test_one_error_style_with_an_exit_code_per_kind(tmp_path):
    cases = [(["find", "imdb", "cnn", "--precision", "fp16"], 2, "fp16"),  # not among the choices: usage
             (["find", "--no-such-flag"], 2, "--no-such-flag"),
             (["find", "--rewind", "epoch:x"], 2, "epoch:x"),
             (["find", "imdb", "cnn", "--recipe", "no-such-recipe", "--store", tmp_path], 3, "no-such-recipe"),
             (["show", "nope", "--store", tmp_path], 3, "nope")]
    for argv, code, word in cases:
        p = run_cli(*argv, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == code and len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], \
            (argv, p.returncode, p.stderr)


def test_readme_documents_the_exit_codes():
    readme = (REPO / "README.md").read_text()
    for code, _ in EXIT_CODES:
        assert re.search(rf"^\|\s*{code}\s*\|", readme, re.M), f"exit code {code} is not in the README's table"
    assert "--quiet" in readme
