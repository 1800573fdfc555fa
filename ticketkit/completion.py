"""Shell completion of the arguments that name things in the store (click's `shell_complete`).

DATASET and ARCH complete by themselves: they are click Choices over the registries (cliopts.LazyChoice). A run
or ticket reference completes from the store's directory names, read without importing torch or parsing any run,
so a TAB stays instant. The store is the command's --store if it was typed before the argument, else
TICKETKIT_STORE, else ./artifacts (as every command resolves it).

    eval "$(_TICKETKIT_COMPLETE=bash_source ticketkit)"    # zsh_source / fish_source for those shells
"""
from __future__ import annotations

from pathlib import Path

from click.shell_completion import CompletionItem

from .store import default_root


def _root(ctx) -> Path:
    store = ctx.params.get("store") if ctx is not None else None
    return Path(store) if store else default_root()


def _names(ctx, prefixes: tuple[str, ...]) -> list[str]:
    root = _root(ctx)
    try:
        names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "hub")
    except OSError:  # no store yet: nothing to offer, never an error in the user's shell
        return []
    return [n for n in names if not prefixes or n.startswith(prefixes)]


def _completer(*prefixes: str, help: str):
    def complete(ctx, param, incomplete: str) -> list[CompletionItem]:
        if "/" in incomplete or incomplete.startswith("."):  # a path: let the shell complete files
            return [CompletionItem(incomplete, type="file")]
        return [CompletionItem(n, help=help) for n in _names(ctx, prefixes) if n.startswith(incomplete)]
    return complete


complete_ticket_ref = _completer(help="run in the store")                       # show, verify, push
complete_find_run = _completer("find-", help="find run")                        # transfer SOURCE
complete_report_ref = _completer("transfer-", "sweep-", "find-", help="run")    # report
complete_sweep = _completer("sweep-", help="sweep")                             # sweep status
