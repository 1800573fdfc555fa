"""The command line: a thin layer over the Python API. Every flag of `find` comes from the config dataclasses."""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import typing
from pathlib import Path

import click

from .config import FindConfig, cli_fields, from_dict, load_recipe, merge, set_path
from .errors import TicketkitError


def _click_type(tp):
    if typing.get_origin(tp) is typing.Union:
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    return {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL}.get(tp, click.STRING)


def config_options(fn):
    """One option per config field that has a flag (FindConfig's metadata), e.g. --rate -> prune.rate."""
    for path, f, tp in reversed(list(cli_fields())):
        name = f.metadata.get("flag") or f.name.replace("_", "-")
        fn = click.option(f"--{name}", f"cfg__{'__'.join(path)}", type=_click_type(tp), default=None,
                          help=f.metadata.get("help"))(fn)
    return fn


def common_options(fn):
    fn = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                      help="load datasets from DIR/<name>/{train,test}.parquet (or TICKETKIT_DATA_DIR)")(fn)
    fn = click.option("--store", type=click.Path(file_okay=False), default=None,
                      help="the local store (default ./artifacts or TICKETKIT_STORE)")(fn)
    fn = click.option("--quiet", is_flag=True, help="no progress bars or logs")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="print a machine-readable summary on stdout")(fn)
    return fn


class SigintFlag:
    """First Ctrl-C: finish the current epoch, checkpoint, stop. Second Ctrl-C: stop now (last checkpoint stays)."""

    def __init__(self):
        self.hit = False

    def __call__(self) -> bool:
        return self.hit

    def __enter__(self):
        def handler(signum, frame):
            if self.hit:
                raise KeyboardInterrupt
            self.hit = True
            click.echo("\ninterrupt: stopping after this epoch's checkpoint (Ctrl-C again to stop at once)", err=True)
        self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)


def build_find_config(recipe: str | None, dataset: str | None, arch: str | None, flags: dict) -> FindConfig:
    d: dict = {}
    if recipe:
        d = load_recipe(recipe)
        d.pop("transfer", None)  # a transfer recipe's own table; find ignores it
        d.pop("sweep", None)
        cfg = from_dict(FindConfig, d, "recipe")  # unknown keys / wrong types fail here, before any training
        d = cfg.to_dict()
    if dataset:
        set_path(d, ("data", "dataset"), dataset)
    if arch:
        set_path(d, ("model", "arch"), arch)
    for key, v in flags.items():
        if key.startswith("cfg__") and v is not None:
            set_path(d, tuple(key[5:].split("__")), v)
    return FindConfig.from_dict(merge(FindConfig().to_dict(), d)).validate()


def _command_line() -> str:
    return "ticketkit " + " ".join(_quote(a) for a in sys.argv[1:])


def _quote(a: str) -> str:
    import shlex
    return shlex.quote(a)


def _emit(obj, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=str))
    elif text:
        click.echo(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.version_option(package_name="ticketkit")
@click.pass_context
def main(ctx, debug):
    """ticketkit: find, share and transfer lottery tickets in text classifiers."""
    ctx.obj = {"debug": debug}


@main.command()
@click.argument("dataset", required=False)
@click.argument("arch", required=False)
@click.option("--recipe", type=click.Path(), default=None, help="a TOML recipe (flags override its values)")
@config_options
@common_options
def find(dataset, arch, recipe, data_dir, store, quiet, as_json, **flags):
    """Find lottery tickets: iterative or one-shot magnitude pruning on DATASET with ARCH."""
    from .find import find_ticket

    cfg = build_find_config(recipe, dataset, arch, flags)
    with SigintFlag() as stop:
        run = find_ticket(cfg, data_dir=data_dir, store=store, progress=not quiet, command=_command_line(), stop_flag=stop)
    info = run.info
    _emit({"run": str(run.path), **info}, as_json, _levels_table(info, run.path))


def _levels_table(info: dict, path) -> str:
    from .report import format_table

    rows = [[r["level"], f"{r['density_prunable'] * 100:.3f}", f"{r['density_all'] * 100:.3f}",
             f"{r['test_accuracy'] * 100:.2f}", f"{r['test_macro_f1'] * 100:.2f}", r["best_epoch"], r["epochs"],
             f"{r['seconds']:.0f}"] for r in info.get("levels", [])]
    head = ["level", "% remaining", "% all weights", "test acc", "macro-F1", "best ep", "epochs", "seconds"]
    return f"run {path}\n" + format_table(head, rows)


@main.command("ls")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="the local store")
@click.option("--hub", "hub_user", default=None, help="list the tickets a Hub user or org has published instead")
@click.option("--json", "as_json", is_flag=True)
def ls_cmd(store, hub_user, as_json):
    """The runs and tickets in the store (incomplete ones are flagged)."""
    from .report import format_table
    from .store import Store

    if hub_user:
        from .hub import list_hub

        items = list_hub(hub_user)
        _emit(items, as_json, format_table(["repo", "last modified", "tags"],
                                           [[i["id"], i.get("last_modified", ""), ",".join(i.get("tags", []))] for i in items]))
        return
    runs = Store(store).runs()
    rows = []
    for r in runs:
        lv = r.get("levels") or []
        rows.append([r["name"], r.get("kind", "?"), r.get("status", "?"), len(lv),
                     f"{lv[-1]['density_prunable'] * 100:.2f}" if lv else "",
                     f"{lv[0]['test_accuracy'] * 100:.2f}" if lv else "",
                     f"{lv[-1]['test_accuracy'] * 100:.2f}" if lv else ""])
    _emit(runs, as_json, format_table(["run", "kind", "status", "levels", "% remaining", "dense acc", "sparsest acc"], rows)
          if rows else f"no runs in {Store(store).root}")


@main.command()
@click.argument("ref")
@click.option("--level", default=None, help="a level index (3) or % weights remaining (16.9)")
@click.option("--store", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
def show(ref, level, store, as_json):
    """A ticket's or run's config, levels, measured densities and accuracies."""
    from .fsio import read_json
    from .store import Store

    st = Store(store)
    p = Path(ref)
    if not ref.startswith("hf://") and not p.exists():
        p = st.root / ref if (st.root / ref).exists() else None
    if p is not None and (p / "run.json").exists() and level is None:
        info = read_json(p / "run.json")
        cfg = info.get("config", {})
        _emit(info, as_json, f"{_levels_table(info, p)}\nstatus {info.get('status')}\nconfig {json.dumps(cfg, sort_keys=True)}")
        return
    from .ticket import Ticket

    t = Ticket.load(st.resolve(ref, level))
    c = t.config
    layers = "\n".join(f"  {n}: {d * 100:.3f}%" for n, d in c["density"]["layers"].items())
    text = (f"ticket {t.path}\nrun {c.get('run')}  level {c.get('level')}  arch {t.arch}  dataset {c['find']['data']['dataset']}\n"
            f"% weights remaining: {c['density']['prunable'] * 100:.3f} (prunable), {c['density']['all'] * 100:.3f} (all)\n"
            f"test accuracy {c['metrics']['test_accuracy'] * 100:.2f}  macro-F1 {c['metrics']['test_macro_f1'] * 100:.2f}\n"
            f"per-layer % remaining:\n{layers}\nconfig {json.dumps(c['find'], sort_keys=True)}")
    _emit(c, as_json, text)


@main.command()
@click.argument("ref", required=False)
@click.option("--store", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
def verify(ref, store, as_json):
    """Check a ticket, a run or the whole store; list every problem, exit 1 if there is any."""
    from .verify import verify_path

    problems, checked = verify_path(ref, store)
    _emit({"checked": checked, "problems": problems}, as_json,
          "\n".join([f"PROBLEM {p}" for p in problems] + [f"checked {checked} ticket(s): {len(problems)} problem(s)"]))
    if problems:
        sys.exit(1)


def run_cli(argv=None) -> int:
    """Entry point: TicketkitErrors become one line on stderr and a non-zero exit; --debug shows tracebacks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("TICKETKIT_DEBUG") == "1"
    try:
        main.main(args=argv, prog_name="ticketkit", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except TicketkitError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted: progress is checkpointed; run the same command again to resume", err=True)
        return 130


def entry() -> None:
    sys.exit(run_cli())
