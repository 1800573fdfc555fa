"""Commands over a ticket's mask and trained weights: `overlap`, `export --trained`, `predict`.
Registered on the main group by cli.py (`register(main)`); each is a thin layer over overlap.py and sparse.py."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .cliopts import output_options, store_option

LEVEL_HELP = "a level index (3) or % weights remaining (16.9), for a run REF"


def _emit(obj, as_json: bool, text: str) -> None:
    click.echo(json.dumps(obj, indent=2, default=str) if as_json else text)


def load_ticket(ref: str, level, store):
    """A ticket for what a user typed, as elsewhere: a ticket dir, a run (path or name; --level), hf://user/repo."""
    from .hub import resolve_ref
    from .ticket import Ticket

    return Ticket.load(resolve_ref(ref, level, store))


def load_classifier(ref: str, level, store):
    """An exported classifier directory, or any ticket ref (its level's trained weights)."""
    from .sparse import SparseClassifier

    p = Path(ref)
    if p.is_dir() and (p / "model.safetensors").is_file() and not (p / "ticket.safetensors").exists():
        return SparseClassifier.load(p)
    return load_ticket(ref, level, store).classifier()


@click.command()
@click.argument("ref_a", metavar="TICKET_A")
@click.argument("ref_b", metavar="TICKET_B")
@click.option("--level", default=None, help=LEVEL_HELP + " (both, unless --level-b)")
@click.option("--level-b", default=None, help="the level of TICKET_B when it differs from --level")
@store_option("where to look runs up by name")
@output_options()
def overlap(ref_a, ref_b, level, level_b, store, quiet, as_json):
    """Mask overlap of two tickets, per layer: Jaccard |A∩B|/|A∪B| against what two random masks of the same
    per-layer counts share by chance (E|A∩B| = kA kB / n; chance = E / (kA + kB - E))."""
    from .errors import TicketkitError
    from .overlap import overlap_table, ticket_overlap

    a = load_ticket(ref_a, level, store)
    b = load_ticket(ref_b, level_b if level_b is not None else level, store)
    try:
        ov = ticket_overlap(a, b)
    except ValueError as e:
        raise TicketkitError(f"{e}: pass two tickets of the same architecture and vocabulary size") from None
    _emit({"a": str(a.path), "b": str(b.path), **ov}, as_json,
          f"A {a.path} ({a.density:.2%} remaining)\nB {b.path} ({b.density:.2%} remaining)\n{overlap_table(ov)}")


@click.command()
@click.argument("ref", metavar="TICKET")
@click.option("--trained", "out_dir", required=True, type=click.Path(file_okay=False),
              help="write the level's trained weights x mask (safetensors), config, tokenizer and size.json to DIR")
@click.option("--level", default=None, help=LEVEL_HELP)
@store_option("where to look runs up by name")
@output_options()
def export(ref, out_dir, level, store, quiet, as_json):
    """Export a usable sparse classifier: the trained weights x mask of a ticket's level, with its real size (dense
    bytes against torch.sparse CSR and COO encodings). Load it with `ticketkit predict OUT_DIR "text"`."""
    from .sparse import export_trained

    t = load_ticket(ref, level, store)
    size = export_trained(t, out_dir)
    mb = 1 / 2 ** 20
    _emit({"out": out_dir, **size}, as_json,
          f"exported {t.path} ({size['density']:.2%} non-zero of {size['parameters']} weights) to {out_dir}\n"
          f"dense {size['dense_bytes'] * mb:.2f} MiB, CSR {size['csr_bytes'] * mb:.2f} MiB "
          f"({size['csr_over_dense']:.2f}x), COO {size['coo_bytes'] * mb:.2f} MiB ({size['coo_over_dense']:.2f}x); "
          f"model.safetensors {size['file_bytes'] * mb:.2f} MiB; written to {Path(out_dir) / 'size.json'}")


@click.command()
@click.argument("ref", metavar="TICKET")
@click.argument("texts", nargs=-1, required=True, metavar="TEXT...")
@click.option("--level", default=None, help=LEVEL_HELP)
@store_option("where to look runs up by name")
@output_options()
def predict(ref, texts, level, store, quiet, as_json):
    """Label and probability for each TEXT, from a ticket's trained sparse weights (or an exported classifier)."""
    preds = load_classifier(ref, level, store).predict(list(texts))
    _emit([{"text": t, **p} for t, p in zip(texts, preds)], as_json,
          "\n".join(f"{p['label']}\t{p['probability']:.4f}\t{t}" for t, p in zip(texts, preds)))


def register(group: click.Group) -> None:
    for cmd in (overlap, export, predict):
        group.add_command(cmd)
