"""Mask overlap (issue 18): Jaccard of two masks per layer and its chance value, on hand-made masks."""
import math

import torch

from ticketkit.overlap import chance_jaccard, layer_overlap, mask_overlap


def _m(bits):
    return torch.tensor(bits, dtype=torch.bool)


def test_layer_overlap_on_hand_made_masks():
    a = _m([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # k1 = 4 of n = 10
    b = _m([0, 0, 1, 1, 1, 1, 1, 1, 0, 0])  # k2 = 6; they share 2, their union is 8
    x = layer_overlap(a, b)
    assert (x["n"], x["kept_a"], x["kept_b"], x["intersection"]) == (10, 4, 6, 2)
    assert math.isclose(x["jaccard"], 2 / 8)
    # chance: E|A∩B| = 4 * 6 / 10 = 2.4; 2.4 / (4 + 6 - 2.4) = 6 / 19
    assert math.isclose(x["chance"], 6 / 19)
    assert layer_overlap(a, a)["jaccard"] == 1.0 and layer_overlap(a, ~a)["jaccard"] == 0.0
    assert chance_jaccard(10, 10, 10) == 1.0  # two full masks always coincide


def test_pooled_overlap_sums_counts_and_per_layer_expectations():
    a = {"x": _m([1, 1, 1, 1, 0, 0, 0, 0, 0, 0]), "y": _m([1, 0, 1, 0])}
    b = {"x": _m([0, 0, 1, 1, 1, 1, 1, 1, 0, 0]), "y": _m([1, 1, 0, 0])}
    ov = mask_overlap(a, b)
    assert math.isclose(ov["layers"]["y"]["jaccard"], 1 / 3) and math.isclose(ov["layers"]["y"]["chance"], 1 / 3)
    p = ov["all"]
    assert (p["n"], p["kept_a"], p["kept_b"], p["intersection"]) == (14, 6, 8, 3)
    assert math.isclose(p["jaccard"], 3 / 11)
    assert math.isclose(p["chance"], (2.4 + 1) / (6 + 8 - 3.4))  # expectations summed over layers: 17 / 53


def test_chance_matches_random_masks_of_those_counts():
    """Independent uniform masks with k1 and k2 ones out of n average the stated chance Jaccard."""
    n, k1, k2 = 10_000, 3_000, 2_000
    g = torch.Generator().manual_seed(0)
    js = []
    for _ in range(40):
        a, b = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
        a[torch.randperm(n, generator=g)[:k1]] = True
        b[torch.randperm(n, generator=g)[:k2]] = True
        js.append(layer_overlap(a, b)["jaccard"])
    assert abs(sum(js) / len(js) - chance_jaccard(k1, k2, n)) < 0.003
