"""What every accuracy-vs-density figure shares (a transfer's, a find run's): log x decreasing to the right with
ticks at the densities the rows name, markers dodged where arms share a density, a chance line, and the name of
the dense reference. matplotlib's object API only (the caller's pyplot state and backend are left alone)."""
from __future__ import annotations

# Neighbouring arms at one density are drawn this far apart in log10 units (about 3 %): enough that no marker hides
# another at 100 %, far less than the gap between two levels (20 % a round is 0.1 in log10).
DODGE = 0.012


def dodge(x: float, i: int, n: int) -> float:
    """Arm i of n at density x, shifted so the n arms sit side by side around x."""
    return x * 10 ** (DODGE * (i - (n - 1) / 2))


def density_axis(ax, ticks, what: str) -> None:
    """Log x, sparser to the right (as in the lottery-ticket papers), ticks at `ticks` (% remaining) labelled in
    plain %. `what` says which densities the ticks are ("requested": the rows' '% requested'; "measured")."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted({round(float(t), 3) for t in ticks})
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.set_xticklabels([f"{t:g}" if what == "requested" else f"{t:.3g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    note = "ticks: requested, points: measured" if what == "requested" else "measured"
    ax.set_xlabel(f"% of prunable weights remaining (log; {note})")


def chance_line(ax, data_info: dict | None) -> None:
    """The score of always predicting the test split's most frequent class, for any number of classes (recorded by
    prepare_data as chance_accuracy)."""
    share = (data_info or {}).get("chance_accuracy")
    if isinstance(share, (int, float)):
        ax.axhline(share * 100, color="grey", linestyle=":", linewidth=1.2,
                   label=f"chance: majority class ({share * 100:.1f})")


def dense_name(rewind: str | None, transferred: bool) -> str:
    """What the unpruned reference is. Under late resetting (rewind epoch:K / step:K) a pruned level starts from
    the weights after K epochs or steps, not from init, so its 100 % point and the dense training (from init) are
    two different numbers: each is named for what it is."""
    late = rewind not in (None, "init", "final")
    if transferred:
        return f"unpruned, source weights rewound to {rewind}" if late else "dense (unpruned)"
    return "dense (trained from init)"
