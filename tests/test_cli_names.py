"""Issue 20, the CLI that teaches: one name per meaning (old names warn and still work, run names unchanged), and
shell completion of DATASET, ARCH and run names from the registries and the store."""
import click
import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from ticketkit.cli import build_find_config, main
from ticketkit.registries import arch_names, dataset_names
from ticketkit.transfer.command import build_transfer_config

RENAMES = [  # (command, old, new, value)
    ("find", "--levels", "--rounds", "3"),
    ("find", "--prune", "--scope", "global"),
    ("find", "--seeds", "--n-seeds", "2"),
    ("transfer", "--levels", "--densities", "100,16.9"),
    ("transfer", "--seeds", "--n-seeds", "2"),
]


def parse(cmd, args):
    """What the command's callback would receive, and what click wrote on stderr while parsing."""
    captured = {}
    command = main.commands[cmd]

    @click.command(params=command.params)
    def probe(**kw):
        captured.update(kw)

    r = CliRunner().invoke(probe, args)
    return captured, r


def config_of(cmd, params):
    return build_find_config(None, None, None, params) if cmd == "find" else build_transfer_config(None, params)


@pytest.mark.parametrize("cmd,old,new,value", RENAMES)
def test_an_old_flag_name_warns_once_and_means_what_the_new_one_does(cmd, old, new, value):
    new_params, r_new = parse(cmd, [new, value])
    old_params, r_old = parse(cmd, [old, value])
    assert r_new.exit_code == 0 and r_old.exit_code == 0, (r_new.output, r_old.output)
    assert old_params == new_params
    assert r_old.output.count("deprecated") == 1 and new in r_old.output and "deprecated" not in r_new.output
    assert config_of(cmd, old_params).to_dict() == config_of(cmd, new_params).to_dict()


def test_renames_keep_run_names():
    old, _ = parse("find", ["--levels", "3", "--prune", "global"])
    new, _ = parse("find", ["--rounds", "3", "--scope", "global"])
    assert build_find_config(None, None, None, old).run_name() == build_find_config(None, None, None, new).run_name()


@pytest.mark.parametrize("order", [["--levels", "3", "--rounds", "4"], ["--rounds", "4", "--levels", "3"]])
def test_old_and_new_name_together_is_a_usage_error(order):
    _, r = parse("find", order)
    assert r.exit_code == 2 and "give only --rounds" in r.output


@pytest.mark.parametrize("cmd", ["find", "transfer"])
def test_help_shows_only_the_new_names(cmd):
    out = CliRunner().invoke(main, [cmd, "--help"]).output
    assert "--n-seeds" in out and "--seeds " not in out and "--levels" not in out and "--prune " not in out


def completions(args, incomplete, **env):
    return [c.value for c in ShellComplete(main, {}, "ticketkit", "_TICKETKIT_COMPLETE").get_completions(args, incomplete)]


def test_dataset_and_arch_complete_from_the_registries():
    assert completions(["find"], "") == list(dataset_names())
    assert completions(["find", "imdb"], "") == list(arch_names())
    assert completions(["find"], "--ro") == ["--rounds"]  # the hidden old names are not offered


def test_run_names_complete_from_the_store(tmp_path, monkeypatch):
    for name in ("find-imdb-cnn-aaa", "find-imdb-lstm-bbb", "transfer-ccc", "sweep-ddd", ".locks"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("TICKETKIT_STORE", str(tmp_path))
    assert completions(["show"], "find-imdb-c") == ["find-imdb-cnn-aaa"]
    assert completions(["transfer"], "") == ["find-imdb-cnn-aaa", "find-imdb-lstm-bbb"]
    assert completions(["sweep", "status"], "") == ["sweep-ddd"]
    assert "transfer-ccc" in completions(["report"], "")
    other = tmp_path / "other"
    (other / "find-yelp2-cnn-eee").mkdir(parents=True)
    assert completions(["verify", "--store", str(other)], "") == ["find-yelp2-cnn-eee"]


def test_bash_completion_script_is_what_the_readme_says():
    from conftest import REPO, run_cli

    assert "_TICKETKIT_COMPLETE=bash_source ticketkit" in (REPO / "README.md").read_text()
    p = run_cli(env={"_TICKETKIT_COMPLETE": "bash_source"})
    assert "complete -o nosort -F _ticketkit_completion ticketkit" in p.stdout
