"""A ticket: init weights + bool mask + rewind weights in safetensors, with config, tokenizer and model card beside.

    my-ticket/
      ticket.safetensors   mask.<param> (bool) for every parameter; JSON __metadata__ (format, density)
      init.safetensors     the initial weights; rewind.safetensors: the weights it rewinds to (tensorfiles.py).
                           Both unmasked (the network is rewind * mask), so the controls (a shuffled mask over the
                           same starting weights) can be built from a ticket alone.
      config.json          settings, measured densities, accuracies, shapes, versions
      tokenizer.json       the vocabulary the embedding (and its mask) is indexed by
      README.md            model card (YAML metadata the Hub renders)
      trained.safetensors  the level's trained weights (best-validation state) x mask: a usable classifier (sparse.py)
      manifest.json        sha256 of every file above; written last, so its presence means "complete"

It feels like a `huggingface_hub` model: `save_pretrained`, `from_pretrained`, `push_to_hub` come from
`ModelHubMixin`. It never goes through pickle, and every load is verified.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub import ModelHubMixin

from .card import TAGS
from .errors import IntegrityError, TicketkitError
from .fsio import atomic_dir, read_json, regular_file_problem, sha256_file, write_json, write_text
from .hubspec import hub_errors, require_token
from .store import LEVEL_RE
from .tensorfiles import FORMAT_VERSION, KINDS, WEIGHT_FILES, read_tensors, write_tensors  # noqa: F401
from .ticketspec import _config_problem, _model_spec_problem, param_spec  # noqa: F401  (param_spec: importable from here)

TICKET_FILES = ("ticket.safetensors", *WEIGHT_FILES, "config.json", "tokenizer.json", "README.md",
                "trained.safetensors")  # the last: optional
TICKET_DIR_FILES = (*TICKET_FILES, "manifest.json")  # what a ticket directory holds once complete


class Ticket(ModelHubMixin, library_name="ticketkit", tags=list(TAGS),
             repo_url="https://github.com/ticketkit/ticketkit"):
    def __init__(self, config: dict, init: dict, mask: dict, rewind: dict, tokenizer=None, path: Path | None = None,
                 trained: dict | None = None):
        self.config, self._trained = config, trained
        self.init, self.mask, self.rewind = init, mask, rewind
        self.tokenizer = tokenizer
        self.path = Path(path) if path else None

    # ------------------------------------------------------------------ what a researcher asks of a ticket
    @property
    def arch(self) -> str:
        return self.config["find"]["model"]["arch"]

    @property
    def prunable(self) -> list[str]:
        return list(self.config["prunable"])

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Masks of the prunable parameters only (the others are all True)."""
        return {n: self.mask[n] for n in self.prunable}

    @property
    def density(self) -> float:
        return self.config["density"]["prunable"]

    @property
    def trained(self) -> dict | None:
        """The level's trained weights x mask (trained.safetensors), read on first use; None when not kept."""
        from .sparse import read_trained

        if self._trained is None and self.path is not None and (self.path / "trained.safetensors").is_file():
            self._trained = read_trained(self.path / "trained.safetensors", self.mask)
        return self._trained

    def classifier(self, device=None):
        """A ready model (eval mode, trained masked weights) with its tokenizer: `.predict(["text", ...])`."""
        from .sparse import SparseClassifier
        return SparseClassifier.from_ticket(self, device)

    def build_model(self, weights: str = "rewind", device=None) -> torch.nn.Module:
        """The exact model, holding `weights` (rewind | init) times the mask. Training it under
        `self.masks` is retraining the ticket."""
        from .models import create_model, model_kwargs
        from .config import ModelHparams, from_dict
        from .prune import masked_state

        hp = from_dict(ModelHparams, self.config["find"]["model"], "model")
        model = create_model(hp.arch, self.config["vocab_size"], seed=None, **model_kwargs(hp))
        src = {"rewind": self.rewind, "init": self.init}[weights]
        model.load_state_dict(masked_state(src, self.mask))  # self.mask covers every parameter
        return model.to(device) if device else model

    # ------------------------------------------------------------------ saving
    def _save_pretrained(self, save_directory: Path) -> None:
        """Called by ModelHubMixin.save_pretrained / push_to_hub. Writes every file and the manifest last."""
        d = Path(save_directory)
        write_tensors(d, {f"{kind}.{n}": t for kind in KINDS for n, t in getattr(self, kind).items()},
                      self.config["density"]["prunable"])
        if self.trained is not None:
            from .sparse import write_trained
            write_trained(d / "trained.safetensors", self.trained, self.mask)
        write_json(d / "config.json", self.config)
        if self.tokenizer is None:
            raise TicketkitError("a ticket needs its tokenizer: the embedding mask only means something under it")
        write_text(d / "tokenizer.json", self.tokenizer.to_str())
        from .card import ticket_card

        write_text(d / "README.md", ticket_card(self.config))
        write_manifest(d)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write atomically: into a temp dir beside `path`, then one rename. A reader never sees half a ticket."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise TicketkitError(f"{path} already exists: choose another path or pass overwrite=True")
        with atomic_dir(path, overwrite=True) as tmp:
            self.save_pretrained(tmp)
        self.path = path
        return path

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> "Ticket":
        """Load a ticket directory. Verifies digests, shapes, dtypes, mask values, densities and NaNs."""
        from .data import load_tokenizer

        d = Path(path)
        if d.is_symlink():
            raise IntegrityError(f"{d} is a symlink: a ticket directory is a plain directory; pass the real one")
        if not (d / "ticket.safetensors").exists() and not (d / "config.json").exists():
            raise TicketkitError(f"{d} is not a ticket directory (no ticket.safetensors): pass a ticket, a run, or hf://user/repo")
        for name in ("manifest.json", "config.json", "ticket.safetensors", *WEIGHT_FILES, "tokenizer.json"):
            bad = regular_file_problem(d / name, follow=not verify)  # verify: a symlink is refused by the manifest
            if bad:
                raise IntegrityError(bad)
        if verify:
            check_manifest(d)
        config = read_json(d / "config.json")
        bad = _config_problem(config)
        if bad:
            raise IntegrityError(f"{d}/config.json {bad}: re-create the ticket")
        tensors = read_tensors(d)
        parts = {k: {} for k in KINDS}
        for k, t in tensors.items():
            kind, _, name = k.partition(".")
            if kind not in parts:
                raise IntegrityError(f"{d}/ticket.safetensors has an unexpected tensor {k!r}")
            parts[kind][name] = t
        max_len = config["find"]["data"]["max_len"]
        try:
            tok = load_tokenizer(d / "tokenizer.json", max_len) if (d / "tokenizer.json").exists() else None
        except TicketkitError as e:
            raise IntegrityError(f"{d}: {e}") from None
        ticket = cls(config, parts["init"], parts["mask"], parts["rewind"], tok, path=d)
        if verify:
            problems = ticket.problems()
            if problems:
                raise IntegrityError(f"{d}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        return ticket

    def problems(self) -> list[str]:
        """Everything wrong with this ticket's contents (empty when it is sound): what `show`, `load` and
        `build_model` rely on included (the recorded parameters are those of the architecture it names)."""
        out = []
        spec = self.config.get("params", {})
        bad = _model_spec_problem(self.config)
        if bad:
            return [bad]
        for kind in KINDS:
            have = getattr(self, kind)
            for n in sorted(set(spec) - set(have)):
                out.append(f"missing tensor {kind}.{n}")
            for n in sorted(set(have) - set(spec)):
                out.append(f"tensor {kind}.{n} is not a parameter of this architecture")
        for n, s in spec.items():
            shape, dtype = list(s["shape"]), s["dtype"]
            for kind in KINDS:
                t = getattr(self, kind).get(n)
                if t is None:
                    continue
                if list(t.shape) != shape:
                    out.append(f"{kind}.{n} has shape {list(t.shape)}, config.json says {shape}")
                want = "bool" if kind == "mask" else dtype
                if str(t.dtype).replace("torch.", "") != want:
                    out.append(f"{kind}.{n} has dtype {str(t.dtype).replace('torch.', '')}, expected {want}")
                elif kind != "mask" and not bool(torch.isfinite(t).all()):
                    out.append(f"{kind}.{n} contains NaN or inf weights")
        if out:
            return out
        from .prune import densities

        dens = densities(self.masks, self.init)
        rec = self.config.get("density", {})
        for key in ("prunable", "all"):
            if not math.isclose(dens[key], rec.get(key, -1), rel_tol=0, abs_tol=1e-9):
                out.append(f"measured {key} density {dens[key]:.6f} differs from the recorded {rec.get(key)}")
        for n in self.mask:
            if n not in self.prunable and not bool(self.mask[n].all()):
                out.append(f"mask.{n} prunes a parameter that is not prunable")
        from .sparse import ticket_trained_problems
        out += ticket_trained_problems(self)
        if self.tokenizer is None:
            out.append("tokenizer.json is missing: the embedding mask is meaningless without it")
        elif self.tokenizer.get_vocab_size() != self.config.get("vocab_size"):
            out.append(f"tokenizer.json has {self.tokenizer.get_vocab_size()} words, the ticket was built for "
                       f"{self.config.get('vocab_size')}: wrong tokenizer")
        else:
            from .data import tokenizer_hash

            want = (self.config.get("data") or {}).get("tokenizer_sha256")
            if want and tokenizer_hash(self.tokenizer) != want:
                out.append(f"tokenizer.json hashes to {tokenizer_hash(self.tokenizer)}, the ticket was built with {want}: "
                           "wrong tokenizer (the embedding mask is indexed by the original vocabulary)")
        return out

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token, **kw):
        """Hub or local directory -> verified Ticket. `subfolder=` picks a level of a pushed run."""
        sub = kw.get("subfolder")
        if sub and not LEVEL_RE.match(str(sub).strip("/")):
            raise TicketkitError(f"subfolder {sub!r}: a run's tickets are in level-NN/ subfolders")
        if os.path.isdir(model_id):
            return cls.load(Path(model_id) / sub if sub else model_id)
        return load_from_hub(model_id, revision=revision, subfolder=sub, cache_dir=cache_dir, token=token,
                             force_download=force_download, local_files_only=local_files_only)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, force_download: bool = False, token=None,
                        cache_dir=None, local_files_only: bool = False, revision=None, **kw) -> "Ticket":
        """`Ticket.from_pretrained("user/repo", revision=..., subfolder="level-03")` or a local directory.
        Goes straight to `_from_pretrained`: the mixin's own version first fetches a root config.json, which a run
        repo only has per level, and lets an offline miss escape as a raw huggingface_hub error."""
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token, **kw)

    def push_to_hub(self, repo_id: str, *, token=None, commit_message: str | None = None, private: bool = False,
                    **kw):
        """The same push as `ticketkit push` (hubspec.commit_files): this ticket at the repo root in one commit,
        which also deletes what an earlier push left there (a run's level-NN/, run.json) so no stale layout stays."""
        from .hubspec import commit_files, owned, parse_spec

        if kw:
            raise TicketkitError(f"Ticket.push_to_hub does not take {', '.join(sorted(kw))}: it pushes to main")
        repo_id, rev = parse_spec(repo_id)
        if rev:
            raise TicketkitError(f"push goes to the main branch: drop @{rev} from the repo id")
        token = require_token(token)
        what = (f"run {self.config.get('run')} level {self.config.get('level')} "
                f"({self.density * 100:.2f}% weights remaining)")
        with tempfile.TemporaryDirectory(prefix="ticketkit-push-") as tmp:
            self.save_pretrained(tmp)
            files = {f: Path(tmp) / f for f in TICKET_DIR_FILES if (Path(tmp) / f).exists()}
            return commit_files(repo_id, files, commit_message or f"ticketkit: {what}", f"Pushed with ticketkit: {what}.",
                                owned(TICKET_DIR_FILES), private=private, token=token)

    def __repr__(self) -> str:
        return (f"Ticket(arch={self.arch!r}, level={self.config.get('level')}, density={self.density:.4%}, "
                f"test_accuracy={self.config.get('metrics', {}).get('test_accuracy')})")


def load_from_hub(repo_id: str, revision: str | None = None, subfolder: str | None = None, cache_dir=None,
                  token=None, force_download: bool = False, local_files_only: bool = False) -> "Ticket":
    """Download one ticket (the repo root, or `subfolder` of a run) through the Hugging Face cache and load it
    verified. The cache holds symlinks, which a ticket directory refuses, so it is loaded from a plain copy."""
    from huggingface_hub import snapshot_download

    sub = (subfolder or "").strip("/")
    if sub and not LEVEL_RE.match(sub):
        raise TicketkitError(f"subfolder {subfolder!r}: a run's tickets are in level-NN/ subfolders")
    prefix = f"{sub}/" if sub else ""
    with hub_errors(repo_id, revision):
        local = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                       force_download=force_download, local_files_only=local_files_only,
                                       allow_patterns=[prefix + f for f in TICKET_DIR_FILES] + ["run.json"]))
    src = local / sub if sub else local
    where = f"{repo_id}@{local.name[:12]}" + (f"/{sub}" if sub else "")
    if not (src / "ticket.safetensors").exists():
        if not sub and (local / "run.json").exists():
            n = len(read_json(local / "run.json").get("levels", []))
            raise TicketkitError(f"{repo_id} is a run of {n} levels: pass subfolder='level-NN' (0 to {n - 1}), or "
                                 f"`ticketkit pull {repo_id}` for all of them")
        raise TicketkitError(f"{where} holds no ticket (no ticket.safetensors): it is not a ticketkit ticket repo")
    with tempfile.TemporaryDirectory(prefix="ticketkit-hub-") as tmp:
        for f in TICKET_DIR_FILES:
            if (src / f).exists():
                shutil.copyfile(src / f, Path(tmp) / f)  # follows the cache's symlink to the blob
        try:
            ticket = Ticket.load(tmp, verify=True)
        except TicketkitError as e:
            raise IntegrityError(f"refused {where}: {str(e).replace(str(tmp), 'the ticket')}") from None
    ticket.path = src
    return ticket


def write_manifest(d: Path) -> None:
    files = {f: {"sha256": sha256_file(d / f), "bytes": (d / f).stat().st_size} for f in TICKET_FILES if (d / f).exists()}
    write_json(d / "manifest.json", {"format": FORMAT_VERSION, "files": files})


REQUIRED_FILES = ("ticket.safetensors", "config.json", "tokenizer.json")


def check_manifest(d: Path) -> None:
    """Raise IntegrityError naming the first problem with `d`'s files (see `manifest_problems`)."""
    problems = manifest_problems(d)
    if problems:
        more = f" (and {len(problems) - 1} more; run `ticketkit verify {d}`)" if len(problems) > 1 else ""
        raise IntegrityError(problems[0] + more)


def manifest_problems(d: Path) -> list[str]:
    """Every problem with a ticket directory's files: missing manifest, unlisted, missing, symlinked, resized or
    modified files, and names that would point outside the directory."""
    d = Path(d)
    m = d / "manifest.json"
    if d.is_symlink():
        return [f"{d} is a symlink: a ticket directory is a plain directory; verify the real one"]
    if m.is_symlink():
        return [f"{m} is a symlink: tickets hold plain files only"]
    if not m.exists():
        return [f"{d} is incomplete (no manifest.json): it was interrupted while being written; delete it and re-run"]
    try:
        man = read_json(m)
    except TicketkitError as e:
        return [str(e)]
    files = man.get("files") if isinstance(man, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return [f"{m} is malformed (no 'files' table of name -> {{sha256, bytes}}): re-create the ticket"]
    out = []
    for name in REQUIRED_FILES:
        if name not in files:
            out.append(f"{m} does not list {name}: the file is unprotected; re-create the ticket")
    for name in TICKET_FILES:
        if (d / name).is_symlink() and name not in files:
            out.append(f"{d}/{name} is a symlink: tickets hold plain files only")
    for name, info in files.items():
        if not name or "/" in name or "\\" in name or name.startswith(".") or name in ("manifest.json",):
            out.append(f"{m} names an unsafe path {name!r}: a manifest may only name files inside the ticket")
            continue
        p = d / name
        if p.is_symlink():
            out.append(f"{p} is a symlink: tickets hold plain files only")
        elif regular_file_problem(p):
            out.append(regular_file_problem(p))
        elif not p.is_file():
            out.append(f"{p} is missing: the ticket is incomplete")
        elif p.stat().st_size != info.get("bytes"):
            out.append(f"{p} is {p.stat().st_size} bytes, the manifest says {info.get('bytes')}: truncated or modified")
        elif sha256_file(p) != info.get("sha256"):
            out.append(f"{p} does not match its sha256 in manifest.json: the file was modified or corrupted")
    return out
