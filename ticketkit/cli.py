"""The command line: a thin layer over the Python API. Every flag of `find` comes from the config dataclasses."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from .cliopts import (EXIT_CODES, LazyChoice, OpenChoice, aliased_option, common_options, config_options, data_dir_option, output_options,
                      runtime_options, store_option, transfer_options)
from .completion import complete_find_run, complete_report_ref, complete_sweep, complete_ticket_ref
from .config import FindConfig
from .registries import arch_names, dataset_names
from .errors import TicketkitError
from .interrupt import SigintFlag


def build_find_config(recipe: str | None, dataset: str | None, arch: str | None, flags: dict) -> FindConfig:
    """click's cfg__train__lr options -> FindConfig.from_recipe's {("train", "lr"): ...} overrides."""
    over = {tuple(k[5:].split("__")): v for k, v in flags.items() if k.startswith("cfg__")}
    return FindConfig.from_recipe(recipe, dataset, arch, over)


def _command_line() -> str:
    return "ticketkit " + shlex.join(sys.argv[1:])


def _emit(obj, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=str))
    elif text:
        click.echo(text)


EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=EPILOG)
@click.option("--debug", is_flag=True, envvar="TICKETKIT_DEBUG", show_envvar=True, help="show tracebacks")
@click.version_option(package_name="ticketkit")
@click.pass_context
def main(ctx, debug):
    """ticketkit: find, share and transfer lottery tickets in text classifiers."""
    ctx.obj = {"debug": debug}


RECIPE_HELP = "a built-in recipe by name (see `ticketkit recipes`) or a TOML file; flags override its values"


@main.command()
@click.argument("dataset", required=False, type=OpenChoice(dataset_names, "DATASET"))
@click.argument("arch", required=False, type=LazyChoice(arch_names), metavar="[ARCH]")
@click.option("--dataset", "dataset_opt", default=None, metavar="NAME",
              help="the dataset, for a Hub id org/name (then ARCH may come first: `find --dataset org/name cnn`)")
@click.option("--recipe", default=None, help=RECIPE_HELP)
@aliased_option("--n-seeds", "n_seeds", ["--seeds"], type=int, default=None,
                help="run N independent searches, seeds --seed .. --seed+N-1 (each drives init, split, data order, dropout)")
@click.option("--workers", type=int, default=1, show_default=True,
              help="with --n-seeds: run the searches in N worker processes, one thread each")
@click.option("--stacked/--no-stacked", default=None,
              help="with --n-seeds: train the searches as one stacked model in lockstep (default: on a CUDA GPU only)")
@config_options
@common_options
def find(dataset, arch, dataset_opt, recipe, data_dir, store, quiet, as_json, n_seeds, workers, stacked, **flags):
    """Find lottery tickets: iterative or one-shot magnitude pruning on DATASET with ARCH.

    DATASET is a registered dataset (imdb, yelp2, sst2, ag_news, ...), any folder NAME under --data-dir holding
    NAME/{train,test}.{parquet,csv}, or a Hub id org/name; ARCH a registered architecture (cnn, lstm, ...); by
    default the recipe's, else imdb and cnn."""
    from .find import find_ticket
    from .report.levels import level_warnings, levels_table

    if dataset_opt is not None:
        if arch is None and dataset is not None:  # `find --dataset org/name cnn`: the one positional is ARCH
            dataset, arch = None, LazyChoice(arch_names).convert(dataset, None, click.get_current_context())
        if dataset is not None and dataset != dataset_opt:
            raise click.UsageError(f"two datasets given: {dataset!r} and --dataset {dataset_opt!r}; give one")
        dataset = dataset_opt

    cfg = build_find_config(recipe, dataset, arch, flags)
    with SigintFlag() as stop:
        if n_seeds is None:
            runs = [find_ticket(cfg, data_dir=data_dir, store=store, progress=not quiet, command=_command_line(),
                                stop_flag=stop)]
        else:
            from .seeds import find_seeds

            runs = find_seeds(cfg, n_seeds, workers=workers, data_dir=data_dir, store=store, progress=not quiet,
                              command=_command_line(), stop_flag=stop, stacked=stacked)
    for run in runs:
        for w in level_warnings(run.info):
            click.echo(w, err=True)
    out = [{"run": str(r.path), **r.info} for r in runs]
    _emit(out[0] if n_seeds is None else out, as_json, "\n\n".join(levels_table(r.info, r.path) for r in runs))


@main.command("ls")
@store_option()
@click.option("--hub", "hub_user", default=None, help="list the tickets a Hub user or org has published instead")
@output_options()
def ls_cmd(store, hub_user, quiet, as_json):
    """The runs and tickets in the store (incomplete ones are flagged)."""
    from .report.store import hub_table, runs_table
    from .store import Store

    if hub_user:
        from .hub import list_hub

        items = list_hub(hub_user)
        _emit(items, as_json, hub_table(items))
        return
    runs = Store(store).runs()
    _emit(runs, as_json, runs_table(runs) or f"no runs in {Store(store).root}")


@main.command()
@click.argument("ref", shell_complete=complete_ticket_ref)
@click.option("--level", default=None, help="a level index (3) or % weights remaining (16.9)")
@store_option()
@output_options("no warnings on stderr")
def show(ref, level, store, quiet, as_json):
    """A ticket's or run's config, levels, measured densities and accuracies."""
    from .api import show as describe

    shown = describe(ref, level, store)
    for w in () if quiet else shown.warnings:
        click.echo(w, err=True)
    _emit(shown.data, as_json, shown.text)
    if shown.exit_code:
        sys.exit(shown.exit_code)


@main.command()
@click.argument("ref", required=False, shell_complete=complete_ticket_ref)
@store_option()
@output_options()
def verify(ref, store, quiet, as_json):
    """Check a ticket, a run or the whole store; list every problem, exit 1 if there is any."""
    from .api import verify as verify_refs

    res = verify_refs(ref, store)
    problems, checked = res["problems"], res["checked"]
    _emit(res, as_json,
          "\n".join([f"PROBLEM {p}" for p in problems] + [f"checked {checked} ticket(s): {len(problems)} problem(s)"]))
    if problems:
        sys.exit(1)


def _hub_progress(quiet: bool) -> None:
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@main.command()
@click.argument("ref", shell_complete=complete_ticket_ref)
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="create the repo as private")
@click.option("--level", default=None, help="push one level of a run: an index (3) or % weights remaining (16.9)")
@store_option()
@output_options("no progress bars")
def push(ref, repo_id, private, level, store, quiet, as_json):
    """Publish a ticket, or a whole run (one level-NN/ subfolder per level and an index card), to the Hugging Face
    Hub as REPO_ID, in one commit. The token comes from HF_TOKEN or `hf auth login`."""
    from .api import push as hub_push

    _hub_progress(quiet)
    info = hub_push(ref, repo_id, private=private, level=level, store=store)
    repo = info.repo_url.repo_id if getattr(info, "repo_url", None) else repo_id
    _emit({"repo": repo, "commit": info.oid, "commit_url": info.commit_url, "message": info.commit_message}, as_json,
          f"{info.commit_message}\ncommit {info.commit_url}\nanyone can now run: ticketkit pull {repo}@{info.oid}")


@main.command()
@click.argument("spec", metavar="USER/REPO[@REVISION]")
@store_option()
@output_options("no progress bars")
def pull(spec, store, quiet, as_json):
    """Download a ticket or run from the Hugging Face Hub into the store (store/hub/<user>/<repo>/<commit>/) and
    verify it. It loads offline afterwards."""
    from .api import pull as hub_pull
    from .report.store import pulled

    _hub_progress(quiet)
    path = hub_pull(spec, store=store)
    rows, table = pulled(path)
    spec_ref = spec[5:] if spec.startswith("hf://") else spec
    _emit({"path": str(path), "commit": path.name, "tickets": rows}, as_json,
          f"pulled {spec_ref.partition('@')[0]}@{path.name} into {path}\n{table}\n"
          f"next: ticketkit transfer hf://{spec_ref.partition('@')[0]}@{path.name} --to yelp2")


class _SweepGroup(click.Group):
    """`ticketkit sweep RECIPE ...` runs a sweep; `ticketkit sweep status SWEEP` reads one. Anything that is not a
    subcommand name is the recipe of an implicit `run`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_SweepGroup)
def sweep():
    """Run a grid of find/transfer cells (locally or on Ray): `ticketkit sweep RECIPE`, `ticketkit sweep status SWEEP`."""


@sweep.command("run")
@click.argument("recipe")
@click.option("--ray", "ray_address", default=None, metavar="auto|local|ADDRESS",
              help="run each cell as a Ray task: auto (a running cluster), local (start one here), or host:port")
@click.option("--workers", type=int, default=1, show_default=True,
              help="local backend: worker processes; --ray local: CPUs of the local Ray instance")
@click.option("--cpus-per-cell", type=float, default=None, help="Ray: CPUs requested per cell (default: the recipe's num_cpus, 1)")
@click.option("--quick", is_flag=True, help="merge the recipe's [quick] table over it (tiny subsample, few epochs)")
@data_dir_option
@click.option("--store", default=None, envvar="TICKETKIT_STORE", show_envvar=True, show_default="artifacts",
              help="the store: a directory (shared by all Ray nodes) or hf://org/repo (push each finished cell)")
@runtime_options
@output_options("no live view")
def sweep_run(recipe, ray_address, workers, cpus_per_cell, quick, data_dir, store, quiet, as_json):
    """Run every cell of RECIPE (a built-in recipe's name or a TOML file) that is not done yet; failed and pending
    cells of an earlier run are retried."""
    from .api import sweep as run_sweep
    from .sweep import status_table

    res = run_sweep(recipe, quick=quick, store=store, data_dir=data_dir, workers=workers, ray=ray_address,
                    progress=not quiet, num_cpus=cpus_per_cell)
    c = res.counts
    _emit({"sweep": str(res.path), "seconds": res.seconds, **c, "cells": res.states}, as_json,
          f"{status_table(res.path)}\n{c['done']}/{c['total']} cells done in {res.seconds:.0f}s; "
          f"`ticketkit sweep status {res.path}` or `ticketkit report {res.path}`")
    if c["failed"]:
        sys.exit(1)


@sweep.command("status")
@click.argument("ref", metavar="SWEEP", shell_complete=complete_sweep)
@store_option("where to look SWEEP up by name")
@output_options()
def sweep_status(ref, store, quiet, as_json):
    """Done / running / failed / pending per cell of SWEEP (a sweep-<hash> directory or name), from its files."""
    from .report import status_text, summarize
    from .sweep import cell_states, resolve_sweep

    sd = resolve_sweep(ref, store)
    states = cell_states(sd)
    _emit({"sweep": str(sd), **summarize(states), "cells": states}, as_json, status_text(sd.name, states))


@main.command()
@click.argument("source", required=False, shell_complete=complete_find_run)
@transfer_options(shared=False)
@click.option("--level", default=None, help="transfer one level of the SOURCE run: an index (3) or % remaining (16.9)")
@click.option("--replicate", type=click.IntRange(min=0), default=None, metavar="S",
              help="run seed S's independent replicate alone (its own source search and transfer at seed S); "
                   "`ticketkit report` merges replicates run apart into the --n-seeds group")
@click.option("--recipe", default=None,
              help="a built-in recipe's name or a TOML file: [transfer] plus [train]/[data]; without SOURCE its find "
                   "settings give the source (found first if it is not in the store)")
@transfer_options(shared=True)
@common_options
def transfer(source, level, replicate, recipe, data_dir, store, quiet, as_json, **flags):
    """Transfer a ticket to another dataset: transferred, random and fresh tickets at each level, with a report.

    SOURCE is a ticket, a run (path or name), or hf://user/repo[@rev]; by default the newest finished find run in
    the store on another dataset. Interrupted, the same command resumes without redoing finished cells."""
    import contextlib

    from .transfer import transfer_command

    # Training logs go to stderr, so --json leaves stdout machine-readable.
    with SigintFlag() as stop, contextlib.redirect_stdout(sys.stderr):
        run = transfer_command(source, recipe, flags, level=level, data_dir=data_dir, store=store, progress=not quiet,
                               command=_command_line(), stop_flag=stop, replicate=replicate)
    _emit({"run": str(run.path), **run.results}, as_json, f"{run.table()}\nreport {run.path / 'report.md'}")


@main.command()
@click.argument("refs", nargs=-1, required=True, metavar="RUN...", shell_complete=complete_report_ref)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="where a merge of several replicates goes (default ./<the group's name>)")
@store_option("where to look the run up by name")
@output_options("no flagged-cell lines on stderr")
def report(refs, out, store, quiet, as_json):
    """Rebuild a transfer run's results.csv, report.md and accuracy_vs_density.png from its results.json alone
    (or, for a sweep-<hash> directory, one report.md and cells.csv over all its cells). For a find run: the
    lottery-ticket figure, test accuracy vs % weights remaining, with its controls from the store when present.
    Several transfer runs written by `transfer --replicate S` (directories or results.json files) are merged into
    the report of their group, with intervals over the seeds: the same name and rows as one `--n-seeds` run."""
    from .api import report as build_report

    rep = build_report(list(refs), store, out=out)
    for w in () if quiet else rep.warnings:  # one line per flagged cell: it is in the tables, but never evidence
        click.echo(w, err=True)
    _emit(rep.data, as_json, rep.text)


@main.command()
@click.argument("refs", nargs=-1, metavar="RUN_OR_TRANSFER...", shell_complete=complete_ticket_ref)
@click.option("--arm", default="transferred", show_default=True, help="the arm of a transfer run to compare")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="where compare.md, points.csv and the PNGs go (default ./compare-<hash>)")
@store_option("where to look runs up by name")
@output_options()
def compare(refs, arm, out, store, quiet, as_json):
    """Compare find or transfer runs named by hand: accuracy vs % remaining per setting that differs between
    them (one curve per value, the first run's values as the reference), paired differences by seed per level."""
    from .report.compare import compare as compare_runs

    res = compare_runs(list(refs), out=out, arm=arm, store=store)
    _emit({"out": str(res.out), "markdown": str(res.markdown), "plots": [str(p) for p in res.plots], "axes": res.axes,
           "differences": res.differences}, as_json,
          f"{res.text}\nwrote {res.markdown}, {', '.join(str(p) for p in res.plots)}")


@main.command("recipes")
@output_options()
def recipes_cmd(quiet, as_json):
    """The recipes that ship with ticketkit, each with its purpose: pass a name to --recipe (`--recipe quick`)."""
    from .recipebook import builtin_recipes

    rows = builtin_recipes()
    width = max(len(r["name"]) for r in rows)
    _emit(rows, as_json, "\n".join(f"{r['name']:<{width}}  {r['purpose']}" for r in rows))


from .clisparse import register as _register_sparse  # noqa: E402  overlap, export --trained, predict

_register_sparse(main)


def run_cli(argv=None) -> int:
    """Entry point. Every failure is one line on stderr, `error: ...`, and an exit code of its kind (EXIT_CODES);
    --debug (or TICKETKIT_DEBUG=1) shows tracebacks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("TICKETKIT_DEBUG", "").lower() in ("1", "true", "yes", "on")
    try:
        code = main.main(args=argv, prog_name="ticketkit", standalone_mode=False)
        return code if isinstance(code, int) else 0  # --help and --version return their exit code
    except click.exceptions.Abort:  # click turns a KeyboardInterrupt (our SigintFlag stop) into Abort
        click.echo("interrupted: progress is checkpointed; run the same command again to resume", err=True)
        return 130
    except click.UsageError as e:  # one line, like every other error: what is wrong, and where the help is
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        click.echo(f"error: {' '.join(e.format_message().split())}{where}", err=True)
        return 2
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return 3
    except TicketkitError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted: progress is checkpointed; run the same command again to resume", err=True)
        return 130
    except OSError as e:  # disk full / permissions outside fsio (a library writing on its own): still one line
        from .fsio import _fs_error

        if debug or e.errno is None:
            raise
        import errno

        writing = e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)  # only a write meets these; a read must not
        click.echo(f"error: {_fs_error(Path(e.filename or '?'), e) if writing else _os_line(e)}", err=True)
        return TicketkitError.exit_code


def _os_line(e: OSError) -> str:
    """An OSError from a read (a file vanished, a permission) as one line that does not claim a write."""
    from .errors import redact

    return redact(f"{e.filename or 'a file'}: {e.strerror or e}: check the path and its permissions, then run again")


def entry() -> None:
    sys.exit(run_cli())
