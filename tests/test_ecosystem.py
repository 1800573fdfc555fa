"""ticketkit against the libraries it builds on (issue 20): model cards, matplotlib state, dependency floors."""
from __future__ import annotations

import pytest

from ticketkit.config import FindConfig

TRICKY = 'ticketkit find imdb cnn --data-dir "data{#x}" --store "{{ store }}" --tag "{% if %}"'


def _level_cfg(level=2, command=TRICKY):
    return {"find": FindConfig().to_dict(), "level": level, "density": {"prunable": 0.64, "all": 0.7},
            "metrics": {"test_accuracy": 0.8, "test_macro_f1": 0.79}, "command": command,
            "versions": {"ticketkit": "0", "torch": "2"}, "run": "find-x"}


def test_model_card_is_not_a_template():
    """What the user typed is quoted verbatim: `{#` used to crash the Jinja render, `{{ }}` vanished."""
    from huggingface_hub import ModelCard

    from ticketkit.card import run_card, ticket_card

    for text in (ticket_card(_level_cfg()), run_card({"command": TRICKY}, [_level_cfg(0), _level_cfg(1)])):
        assert TRICKY in text
        card = ModelCard(text)  # the metadata still parses, model-index included
        assert card.data.library_name == "ticketkit" and card.data.eval_results
