"""The source of a transfer: a find run (every level) or a single ticket (its level, plus dense), resolved from
whatever the user typed, and its tickets' weights, loaded (verified) once each when a level is used.

Resolution reads each level's config.json and manifest.json only, not its tensors: it must stay cheap, since
`ticketkit sweep status` resolves the source of every transfer cell. Tensors load through `Ticket.load`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..config import FindConfig
from ..errors import IntegrityError, TicketkitError
from ..find import Run
from ..fsio import read_json
from ..models import create_model, model_kwargs
from ..prune import full_masks
from ..store import LEVEL_RE, Store, is_ticket_dir
from ..ticket import Ticket, param_spec


@dataclass
class SourceLevel:
    index: int
    density_prunable: float
    density_all: float
    path: Optional[Path]  # None: the dense level of a single ticket (all-True mask over the same weights)
    test_accuracy: Optional[float] = None
    config: dict = field(default_factory=dict, repr=False)  # its ticket's config.json (the dense level: none)


@dataclass
class Source:
    """A source run (every level) or a single ticket (its level, plus dense)."""
    kind: str
    path: Path
    find: FindConfig
    levels: list[SourceLevel]
    identity: dict
    vocab_size: int
    tokenizer_path: Path
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def arch(self) -> str:
        return self.find.model.arch

    @property
    def dataset(self) -> str:
        return self.find.data.dataset

    def level(self, index: int) -> SourceLevel:
        return next(x for x in self.levels if x.index == index)

    def closest(self, density: float) -> SourceLevel:
        return min(self.levels, key=lambda lv: (abs(lv.density_prunable - density), lv.index))

    def weights(self, lv: SourceLevel) -> tuple[dict, dict, dict]:
        """(init, masks over the prunable parameters, rewind) of a level, verified on first load."""
        if lv.index not in self._cache:
            if lv.path is not None:
                t = Ticket.load(lv.path)
                self._cache[lv.index] = (t.init, t.masks, t.rewind)
            else:
                t = Ticket.load(self.levels[-1].path)
                # The dense level of a run rewinds to what its level 0 held: the init, or the epoch-K weights under
                # late resetting (the same for every level). Fine-tuned tickets hold trained weights, so use init.
                rewind = t.init if self.find.prune.rewind == "final" else t.rewind
                self._cache[lv.index] = (t.init, full_masks(t.init, t.prunable), rewind)
        return self._cache[lv.index]

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "identity": self.identity, "dataset": self.dataset,
                "arch": self.arch, "seed": self.find.seed, "find": self.find.to_dict(), "vocab_size": self.vocab_size,
                "levels": [{"index": lv.index, "density_prunable": lv.density_prunable, "density_all": lv.density_all,
                            "test_accuracy": lv.test_accuracy, "path": str(lv.path) if lv.path else None}
                           for lv in self.levels]}


def _manifest_sha(d: Path, name: str = "ticket.safetensors") -> str:
    m = read_json(d / "manifest.json") if (d / "manifest.json").exists() else None
    try:
        return m["files"][name]["sha256"]
    except (TypeError, KeyError):
        raise IntegrityError(f"{d} is incomplete or corrupt (no valid manifest.json): re-create or re-pull the ticket") from None


def _tensors_sha(d: Path) -> str:
    """The ticket's tensor bytes as one digest: ticket.safetensors' own for a format-1 ticket (all in one file), or
    over its tensor files (mask, init, rewind) for format 2."""
    import hashlib

    from ..tensorfiles import WEIGHT_FILES

    m = read_json(d / "manifest.json") if (d / "manifest.json").exists() else None
    extra = [f for f in WEIGHT_FILES if isinstance(m, dict) and f in (m.get("files") or {})]
    if not extra:
        return _manifest_sha(d)
    return hashlib.sha256("|".join(f"{f}:{_manifest_sha(d, f)}" for f in ("ticket.safetensors", *extra)).encode()).hexdigest()


def _level_of(d: Path) -> SourceLevel:
    c = read_json(d / "config.json")
    try:
        return SourceLevel(int(c["level"]), float(c["density"]["prunable"]), float(c["density"]["all"]), d,
                           c.get("metrics", {}).get("test_accuracy"), c)
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{d}/config.json is not a ticketkit ticket config (no level/density): re-create the ticket") from None


def _source_from_dirs(kind: str, path: Path, dirs: list[Path]) -> Source:
    c = read_json(dirs[-1] / "config.json")
    if not isinstance(c, dict) or "find" not in c or "vocab_size" not in c:
        raise IntegrityError(f"{dirs[-1]}/config.json is not a ticketkit ticket config (no 'find'): re-create the ticket")
    find = FindConfig.from_dict(c["find"])
    tok = dirs[-1] / "tokenizer.json"
    if not tok.exists():
        raise TicketkitError(f"{dirs[-1]} has no tokenizer.json: a ticket's embedding mask is meaningless without its "
                             f"vocabulary; re-create or re-pull the ticket")
    levels = [_level_of(d) for d in dirs]
    if kind == "ticket" and levels[0].density_prunable < 1.0:
        levels.insert(0, SourceLevel(0, 1.0, 1.0, None))  # dense: the same weights under an all-True mask
    identity = {"kind": kind, "tickets": {d.name if kind == "run" else "ticket": _ticket_identity(d, lv.config)
                                          for d, lv in zip(dirs, (x for x in levels if x.path is not None))}}
    return Source(kind, path, find, levels, identity, int(c["vocab_size"]), tok)


def _ticket_identity(d: Path, c: dict) -> dict:
    """What a source ticket means to a training: its tensors' bytes, and also what they do not show. Two level-0
    tickets that differ only in max_len (or in their vocabulary, or in the data they were found on) hold the same
    init, so the tensors alone would let one's transfer be reused for the other. Wall-clock and metric fields of the
    config are left out: a re-run of the same search keeps its identity."""
    from ..config import config_hash
    from ..data import data_identity

    data = c.get("data") if isinstance(c.get("data"), dict) else {}
    return {"ticket": _tensors_sha(d), "tokenizer": _manifest_sha(d, "tokenizer.json"),
            "settings": config_hash({"find": c.get("find"), "data": data_identity(data), "vocab_size": c.get("vocab_size"),
                                     "params": c.get("params"), "prunable": c.get("prunable")})}


def resolve_source(ref=None, store=None, target: str = "yelp2", arch: str | None = None, level=None) -> Source:
    """A Source for: None (the newest finished find run in the store on a dataset other than `target`), a Run,
    a run directory or name, a ticket directory, or hf://user/repo[@rev]. `level` picks one level of a run."""
    store = store if isinstance(store, Store) else Store(store)
    if isinstance(ref, Run):
        ref = str(ref.path)
    if ref is None:
        if level is not None:
            raise TicketkitError("--level needs a SOURCE run to pick the level from")
        ref = default_sources(store, target, arch)[0]["path"]
    ref = str(ref)
    if ref.startswith("hf://"):
        from ..hub import pull, resolve_ref  # hub.resolve_ref is the one place that turns hf:// into a path

        if level is not None:
            return _single(resolve_ref(ref, level, store))
        p = Path(pull(ref[5:], store=store))
    else:
        p = Path(ref)
        if not p.exists() and (store.root / ref).exists():
            p = store.root / ref
        elif not p.exists():  # a name or prefix in the store: a run (via one of its levels) or a ticket
            r = Path(store.resolve(ref))
            p = r.parent if LEVEL_RE.match(r.name) else r
    if is_ticket_dir(p):
        if level is not None:
            raise TicketkitError(f"{p} is a single ticket: --level applies to runs only")
        return _single(p)
    if level is not None:
        return _single(store.resolve(str(p), str(level)))
    run = Run(p)
    if (p / "run.json").exists():
        info = run.info
        if info.get("status") != "complete":
            raise TicketkitError(f"source run {p.name} is not finished (status {info.get('status')!r}): finish it by "
                                 f"running its find command again, or pick one finished level with --level")
    dirs = run.ticket_paths()
    if not dirs:
        raise TicketkitError(f"{p} holds no tickets (no level-NN/ with a manifest): pass a finished run or a ticket")
    incomplete = [d.name for d in p.iterdir() if LEVEL_RE.match(d.name) and d not in dirs]
    if incomplete:
        raise IntegrityError(f"{p}/{incomplete[0]} is incomplete (no manifest.json): it was interrupted while being "
                             f"written; re-run the source's find command")
    return _source_from_dirs("run", p, dirs)


def default_sources(store: Store, target: str, arch: str | None = None) -> list[dict]:
    """The store's finished find runs (no control) on a dataset other than `target`, newest first: the first is
    the source a transfer without SOURCE takes."""
    runs = [r for r in store.runs("find") if r.get("status") == "complete"
            and r.get("config", {}).get("data", {}).get("dataset") != target
            and r.get("config", {}).get("prune", {}).get("control", "none") == "none"
            and (arch is None or r.get("config", {}).get("model", {}).get("arch") == arch)]
    if not runs:
        what = f"{arch} " if arch else ""
        raise TicketkitError(f"no finished {what}find run on a dataset other than {target} in the store {store.root}: "
                             f"run `ticketkit find imdb {arch or 'cnn'}` first, or pass a ticket or run")
    # "finished" has one-second resolution: two runs finished in the same second are ordered by run.json's mtime
    return sorted(runs, key=lambda r: (r.get("finished", ""), _mtime(Path(r["path"]) / "run.json")), reverse=True)


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


def _single(p: Path) -> Source:
    return _source_from_dirs("ticket", Path(p), [Path(p)])


def check_source(src: Source, levels: list[SourceLevel], arch: str | None) -> None:
    """Before any training: every needed ticket loads and verifies, and fits the architecture it claims."""
    if arch is not None and src.arch != arch:
        raise TicketkitError(f"the source {src.path} was found with architecture {src.arch}, not {arch}: "
                             f"pass a {arch} ticket or drop --arch")
    hp = src.find.model
    model = create_model(hp.arch, src.vocab_size, seed=0, **model_kwargs(hp))
    spec = param_spec(model)
    for lv in levels:
        d = lv.path or src.levels[-1].path
        c = lv.config if lv.path is not None else src.levels[-1].config  # read at resolution (the same file)
        if c.get("params") != spec:
            diff = sorted(set(spec) ^ set(c.get("params", {}))) or \
                [n for n in spec if spec[n] != c["params"].get(n)]
            raise TicketkitError(f"{d} does not fit a {hp.arch} model with its own settings (first difference: "
                                 f"{diff[0] if diff else '?'}): it was found under a different architecture")
        src.weights(lv)  # loads and verifies digests, shapes, NaNs, densities and the tokenizer
