"""Model cards: YAML metadata the Hub renders (library, tags, datasets, model-index) and a readable body."""
from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .numerics import describe

# The Hub's search tags of every ticket: the cards' metadata and Ticket's ModelHubMixin both take them from here.
TAGS = ("lottery-ticket", "pruning", "text-classification")


def _dataset(cfg: dict) -> dict:
    """What the evaluation data was, as the model-index can say it, claiming no more than was read: the Hub id and
    the commit resolved, or the local files (then no Hub dataset is named); the test reviews counted, and of how
    many. A config with no recorded source (older tickets) names only ticketkit's dataset name."""
    name = cfg["find"]["data"]["dataset"]
    d = cfg.get("data") or {}
    src = d.get("source") or {}
    args = {}
    if d.get("test_size") is not None:
        args["test_reviews"] = d["test_size"]
        total = (src.get("rows") or {}).get("test")
        if total is not None:
            args["test_reviews_in_split"] = total
            if d["test_size"] < total:
                args["subsample"] = f"stratified, seed {cfg['find'].get('seed')}"
    out = {"dataset_type": name, "dataset_name": f"{name} (source not recorded)", "dataset_split": "test",
           "dataset_args": args or None, "datasets": None}
    if src.get("kind") == "hub":
        out.update(dataset_type=src["id"], dataset_name=name, dataset_revision=src.get("revision"),
                   datasets=[src["id"]])
    elif src.get("kind") == "local":
        out["dataset_name"] = f"{name} (local {src.get('format')}: {src.get('path')})"
    return out


def _card_data(cfg: dict, rows: list[dict], model_name: str) -> ModelCardData:
    arch = cfg["find"]["model"]["arch"]
    ds = _dataset(cfg)
    datasets = ds.pop("datasets")
    evals = [EvalResult(task_type="text-classification", **ds, metric_type="accuracy",
                        metric_value=round(r["test_accuracy"], 4),
                        metric_name=f"test accuracy at {r['density_prunable'] * 100:.2f}% weights remaining (level {r['level']})")
             for r in rows if r.get("test_accuracy") is not None]
    return ModelCardData(library_name="ticketkit", license="apache-2.0",
                         tags=[*TAGS[:2], "ticketkit", arch, *TAGS[2:]],  # the order published cards carry
                         datasets=datasets, model_name=model_name,
                         eval_results=evals or None, pipeline_tag="text-classification")


def describe_data(cfg: dict) -> str:
    """One line on the data a ticket was measured on, for the card's body."""
    ds = _dataset(cfg)
    where = f"`{ds['dataset_type']}` at revision `{ds['dataset_revision']}`" if ds.get("dataset_revision") else \
        f"`{ds['dataset_name']}`"
    a = ds.get("dataset_args") or {}
    n = f", tested on {a['test_reviews']} of its {a.get('test_reviews_in_split', '?')} test reviews" if a else ""
    return f"Data: {where}{n}{' (' + a['subsample'] + ' subsample)' if a.get('subsample') else ''}."


def _table(rows: list[dict]) -> str:
    lines = ["| level | % weights remaining (prunable) | % remaining (all weights) | test accuracy | macro-F1 |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        acc = "" if r.get("test_accuracy") is None else f"{r['test_accuracy'] * 100:.2f}"
        f1 = "" if r.get("test_macro_f1") is None else f"{r['test_macro_f1'] * 100:.2f}"
        lines.append(f"| {r['level']} | {r['density_prunable'] * 100:.3f} | {r['density_all'] * 100:.3f} | {acc} | {f1} |")
    return "\n".join(lines)


def level_row(cfg: dict) -> dict:
    m = cfg.get("metrics", {})
    return {"level": cfg.get("level"), "density_prunable": cfg["density"]["prunable"], "density_all": cfg["density"]["all"],
            "test_accuracy": m.get("test_accuracy"), "test_macro_f1": m.get("test_macro_f1")}


def _body(title: str, cfg: dict, rows: list[dict], load: str) -> str:
    f = cfg["find"]
    return f"""
# {title}

A lottery ticket (Frankle & Carbin, 2019) for a `{f['model']['arch']}` text classifier trained on `{f['data']['dataset']}`,
found with [ticketkit](https://github.com/ticketkit/ticketkit): {f['prune']['scope']} {f['prune']['schedule']} magnitude
pruning, rewinding to `{f['prune']['rewind']}`, control `{f['prune']['control']}`, seed {f['seed']}.
Densities are measured from the masks, over prunable weights and over all weights.
{describe_data(cfg)}

{_table(rows)}

## How it was made

```
{cfg.get('command') or 'ticketkit find ' + f['data']['dataset'] + ' ' + f['model']['arch']}
```

ticketkit {cfg.get('versions', {}).get('ticketkit')}, torch {cfg.get('versions', {}).get('torch')}. Run `{cfg.get('run')}`.
Trained on {describe(cfg.get('numerics'))}: the same command repeats these bits on the same kind of machine.

## How to use it

```python
{load}
```

Or retrain it on another dataset: `ticketkit transfer hf://<this repo> --to yelp2`.
The ticket holds its bool masks in `ticket.safetensors`, its init and rewind weights in `init.safetensors` and
`rewind.safetensors`, its settings in
`config.json`, and the vocabulary its embedding is indexed by in `tokenizer.json`.
"""


def _card(data: ModelCardData, body: str) -> str:
    """YAML metadata plus a plain body. Never a Jinja template: the body quotes what the user typed (the command),
    where a `{#` would crash the render and `{{ x }}` would vanish."""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def ticket_card(cfg: dict) -> str:
    f = cfg["find"]
    name = f"{f['data']['dataset']}-{f['model']['arch']} ticket, level {cfg.get('level')}"
    rows = [level_row(cfg)]
    data = _card_data(cfg, rows, name)
    load = ('from ticketkit import Ticket\n'
            'ticket = Ticket.from_pretrained("<user>/<repo>")\n'
            'model = ticket.build_model()   # rewind weights x mask: retrain this under ticket.masks')
    return _card(data, _body(name, cfg, rows, load))


def run_card(run_summary: dict, level_cfgs: list[dict], subfolders: list[str] | None = None,
             repo_id: str | None = None) -> str:
    """The index card of a pushed run: every level's density and accuracy, and the subfolder that holds it."""
    cfg = level_cfgs[0]
    f = cfg["find"]
    name = f"{f['data']['dataset']}-{f['model']['arch']} lottery-ticket run ({len(level_cfgs)} levels)"
    rows = [level_row(c) for c in level_cfgs]
    subs = subfolders or [f"level-{r['level']:02d}" for r in rows]
    repo = repo_id or "<user>/<repo>"
    load = ('from ticketkit import Ticket\n'
            f'ticket = Ticket.from_pretrained("{repo}", subfolder="{subs[-1]}")   # one level of the run\n'
            'model = ticket.build_model()')
    body = _body(name, {**cfg, "command": run_summary.get("command") or cfg.get("command")}, rows, load)
    body = body.replace("Or retrain it on another dataset: `ticketkit transfer hf://<this repo> --to yelp2`.",
                        f"Or pull it and retrain its tickets on another dataset:\n\n```\nticketkit pull {repo}\n"
                        f"ticketkit transfer hf://{repo} --to yelp2\n```\n\nLevels: "
                        + ", ".join(f"`{s}/`" for s in subs) + ".")
    return _card(_card_data(cfg, rows, name), body)
