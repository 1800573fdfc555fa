"""The command line's options, built from the config dataclasses' metadata, and its exit codes.

A flag of a config field keeps `None` as its default, so a recipe's value is overridden only by a flag that was
given; its help shows the dataclass default (`show_default=<string>`). Choices come from the metadata or the
registries, read when click needs them (LazyChoice), so `ticketkit --help` and `ls` never import torch.
"""
from __future__ import annotations

import dataclasses
import os
import typing

import click

from .config import FindConfig, TransferConfig, cli_fields
from .errors import TicketkitError

# One table, in the README and in `ticketkit --help`: each kind of failure has its own code.
EXIT_CODES = (
    (0, "success"),
    (1, "a check found problems (verify), or sweep cells failed"),
    (2, "usage: an unknown flag, a missing argument, a value not among the choices"),
    (3, "input or data: a bad setting or recipe, a missing file or run, the Hub unreachable, the disk full"),
    (4, "integrity: an artifact is corrupt, truncated or tampered with"),
    (5, "training diverged (loss NaN or inf)"),
    (130, "interrupted (Ctrl-C): progress is checkpointed; the same command resumes"),
)


class LazyChoice(click.Choice):
    """A click.Choice whose names a function returns (a registry), read the first time click needs them."""

    def __init__(self, names, case_sensitive: bool = True):
        self._names, self._cache, self.case_sensitive = names, None, case_sensitive

    @property
    def choices(self):
        if self._cache is None:
            self._cache = tuple(self._names() if callable(self._names) else self._names)
        return self._cache


class OpenChoice(click.ParamType):
    """Any name, with a registry's names offered for shell completion and in --help (a dataset may be a folder
    under --data-dir or a Hub id, which no list of choices holds). The name is checked where it is used."""
    name = "name"

    def __init__(self, names, metavar: str | None = None):
        self._names, self.metavar = names, metavar

    def get_metavar(self, param, ctx=None):  # the registered names, then NAME for any other
        return f"[{self.metavar or '|'.join([*self._names(), 'NAME'])}]"

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(n) for n in self._names() if n.startswith(incomplete)]


class Checked(click.ParamType):
    """A string that a config check accepts (rewind's epoch:K and step:K cannot be a list of choices)."""

    def __init__(self, check, metavar: str):
        self.check, self.metavar, self.name = check, metavar, metavar

    def get_metavar(self, param, ctx=None):
        return f"[{self.metavar}]"

    def convert(self, value, param, ctx):
        try:
            self.check(value)
        except TicketkitError as e:
            self.fail(str(e), param, ctx)
        return value


def _click_type(tp):
    if typing.get_origin(tp) is typing.Union:
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    return {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL}.get(tp, click.STRING)


def _shown_default(f: dataclasses.Field) -> str | bool:
    """The dataclass default as `--help` shows it (a list comma-separated, seeds as their count), or False."""
    v = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if v is None or f.metadata.get("negate"):
        return False
    if isinstance(v, list):
        return str(len(v)) if f.metadata.get("cli_type") is int else ",".join(f"{x:g}" if isinstance(x, float) else
                                                                               str(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def _warn_alias(ctx, param, value):
    """A deprecated flag name: one line on stderr, then its value goes where the new name's would."""
    if value is None or value is False:
        return value
    dest, new = param.metadata_dest, param.metadata_new
    if ctx.params.get(dest) not in (None, False):
        raise click.BadParameter(f"{param.opts[0]} is the old name of {new}: give only {new}", ctx, param)
    click.echo(f"warning: {param.opts[0]} is deprecated, use {new} (same meaning; it will be removed)", err=True)
    ctx.meta[f"alias:{dest}"] = value
    ctx.params[dest] = value
    return value


def _take_alias(ctx, param, value):
    """The new name's callback: given, it wins; not given, a deprecated alias's value (processed first) is used."""
    old = ctx.meta.get(f"alias:{param.name}")
    if old is None or value in (None, False):
        return value if old is None else old
    raise click.BadParameter(f"an old name of {param.opts[0]} was also given: give only {param.opts[0]}", ctx, param)


def aliased_option(name: str, dest: str, aliases=(), **kw):
    """click.option(name, dest, **kw) plus a hidden option per old name in `aliases` that warns when used and fills
    `dest`. click processes given options before absent ones, so the alias's value is in place when the new name's
    callback runs; both given is a usage error. Old names never reach a config, so run names do not change."""
    def deco(fn):
        for old in aliases:
            opt = click.Option([old, f"alias__{dest}__{old.lstrip('-').replace('-', '_')}"], expose_value=False,
                               hidden=True, callback=_warn_alias, is_flag=kw.get("is_flag", False),
                               type=None if kw.get("is_flag") else kw.get("type"))
            opt.metadata_dest, opt.metadata_new = dest, name
            fn.__dict__.setdefault("__click_params__", []).append(opt)
        return click.option(name, dest, callback=_take_alias if aliases else None, **kw)(fn)
    return deco


def _field_option(path, f: dataclasses.Field, tp):
    m = f.metadata
    name = m.get("flag") or f.name.replace("_", "-")
    kw: dict = {"help": m.get("help")}
    if m.get("negate"):
        kw["is_flag"] = True
    else:
        if m.get("suggest"):
            kw["type"] = OpenChoice(m["suggest"])
            kw["help"] = f"{kw['help']} (NAME: a folder under --data-dir, or a Hub id org/name)"
        elif m.get("choices"):
            kw["type"] = LazyChoice(m["choices"])
        elif m.get("check"):
            kw["type"] = Checked(m["check"], m.get("metavar", "VALUE"))
        else:
            kw["type"] = _click_type(m.get("cli_type") or (str if typing.get_origin(tp) is list else tp))
        kw.update(default=None, show_default=_shown_default(f))
    return aliased_option(f"--{name}", f"cfg__{'__'.join(path)}", [f"--{a}" for a in m.get("aliases", ())], **kw)


def config_options(fn):
    """One option per FindConfig field that has a flag, e.g. --rate -> prune.rate."""
    for path, f, tp in reversed(list(cli_fields(FindConfig))):
        fn = _field_option(path, f, tp)(fn)
    return fn


def transfer_options(shared: bool):
    """One option per TransferConfig field that has a flag (as config_options does for find). `shared`: the flags
    transfer shares with find (training settings and subsample; same names, meanings and help), else its own.
    A list is one comma-separated string (a count for seeds), a `negate` field an on/off flag (--no-fresh)."""
    def deco(fn):
        for path, f, tp in reversed(list(cli_fields(TransferConfig))):
            if shared == (path[0] == "train" or "find" in f.metadata):
                fn = _field_option(path, f, tp)(fn)
        return fn
    return deco


def store_option(help: str = "the local store"):
    return click.option("--store", type=click.Path(file_okay=False), default=None, envvar="TICKETKIT_STORE",
                        show_envvar=True, show_default="artifacts", help=help)


def data_dir_option(fn):
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None, envvar="TICKETKIT_DATA_DIR",
                        show_envvar=True, help="load datasets from DIR/<name>/{train,test}.parquet "
                                               "(default: from the Hugging Face Hub)")(fn)


def output_options(quiet_help: str = "no progress or notes on stderr"):
    """--quiet and --json: every command takes both, so a script can pass them to any of them."""
    def deco(fn):
        fn = click.option("--quiet", is_flag=True, help=quiet_help)(fn)
        return click.option("--json", "as_json", is_flag=True, help="print a machine-readable result on stdout")(fn)
    return deco


def _to_env(var: str):
    """Hand an option's value to the library (and spawned workers), which read it from the environment."""
    def callback(ctx, param, value):
        if value is not None:
            os.environ[var] = str(value)
        return value
    return callback


def _threads(ctx, param, value):
    from .threads import apply

    try:
        apply(value)
    except TicketkitError as e:
        raise click.BadParameter(str(e), ctx, param) from None
    return value


def runtime_options(fn):
    """Process settings of the commands that train: cores, where encoded data is cached, and the allocator."""
    fn = click.option("--threads", type=int, envvar="TICKETKIT_THREADS", show_envvar=True, expose_value=False,
                      show_default="the cores this process may use", callback=_threads, is_eager=True,
                      help="cores to use in all: caps --workers and every thread pool; training stays at one thread "
                           "per process, so results and run names do not depend on it")(fn)
    fn = click.option("--cache", type=click.Path(file_okay=False), envvar="TICKETKIT_CACHE", show_envvar=True,
                      show_default="~/.cache/ticketkit", expose_value=False, callback=_to_env("TICKETKIT_CACHE"),
                      help="where tokenized datasets are cached")(fn)
    return click.option("--malloc", type=click.Choice(["tuned", "system"]), envvar="TICKETKIT_MALLOC",
                        show_envvar=True, show_default="tuned", expose_value=False,
                        callback=_to_env("TICKETKIT_MALLOC"),
                        help="tuned: glibc keeps freed memory (faster epochs); system: leave the allocator alone")(fn)


def common_options(fn):
    """What find and transfer share: data, store, runtime settings, --quiet and --json."""
    fn = data_dir_option(fn)
    fn = store_option("the local store")(fn)
    fn = runtime_options(fn)
    return output_options("no progress bars or logs")(fn)
