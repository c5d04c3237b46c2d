"""Checks of notebook 02 (1x1 convolutions and bottlenecks): counts derived by hand from the layer shapes.

The expected values are written from the formulas (weights = inputs x outputs x taps, MACs = weights x output
positions), independently of ``course.counting``; tests/test_exercises.py checks the two agree.
"""
from __future__ import annotations

from collections.abc import Mapping

from course.exercises import Mistakes, is_number, count_hint, exercise, first_hint, mapping_hint

FLOPS = {2: "papers' \"ops\" are multiply-accumulates (MACs), one per weight per position, not 2 FLOPs"}


def _macs_mistakes(positions: int) -> Mistakes:
    return Mistakes(ratios={positions: f"did you multiply by the {positions} output positions twice?",
                            1 / positions: f"each weight is used once per output position: multiply by the "
                                           f"{positions} positions of the map",
                            **FLOPS})


# 4e's 5x5 branch on a 14x14x528 map: reduce to 32 channels, then a 5x5 conv to 128
_HW, _CIN, _RED, _OUT = 14, 528, 32, 128
_W_REDUCED = _CIN * _RED + 25 * _RED * _OUT
_W_NAIVE = 25 * _CIN * _OUT


@exercise("02.1", "weights_reduced", "macs_reduced", "weights_naive", "macs_naive")
def _by_hand(weights_reduced, macs_reduced, weights_naive, macs_naive):
    positions = _HW * _HW
    weight_mistakes = Mistakes(
        ratios={positions: "weights do not depend on the map size: count them once, not per position"},
        values={25 * _RED * _OUT: "that is the 5x5 conv alone: the 1x1 reduction in front has weights too",
                _W_REDUCED + _RED + _OUT: "count weights only, without the biases",
                _W_NAIVE + _OUT: "count weights only, without the biases"})
    return first_hint(
        count_hint("weights_reduced", weights_reduced, _W_REDUCED, weight_mistakes),
        count_hint("macs_reduced", macs_reduced, positions * _W_REDUCED, _macs_mistakes(positions)),
        count_hint("weights_naive", weights_naive, _W_NAIVE, weight_mistakes),
        count_hint("macs_naive", macs_naive, positions * _W_NAIVE, _macs_mistakes(positions)))


# Inception 3a on a 28x28x192 map: Inception(192, 64, 96, 128, r, 32, 32)
def _macs_3a(r: int) -> int:
    per_position = 192 * 64 + (192 * 96 + 9 * 96 * 128) + (192 * r + 25 * r * 32) + 192 * 32
    return 28 * 28 * per_position


@exercise("02.2", "macs_3a")
def _wider(macs_3a: Mapping):
    reduces = (16, 32, 192)
    shape = mapping_hint("macs_3a", macs_3a, reduces)
    if shape:
        return shape + " (one entry per #5x5 reduce)"
    for r in reduces:
        branch = 28 * 28 * (192 * r + 25 * r * 32)
        hint = count_hint(f"macs_3a[{r}]", macs_3a[r], _macs_3a(r), Mistakes(
            ratios={**FLOPS, 28 * 28: "did you multiply by the 28x28 positions twice?"},
            values={branch: "that is the 5x5 branch alone: the question asks for the whole module"}))
        if hint:
            return hint
    return None


# GoogLeNet's two auxiliary heads (4a: 14x14x512, 4d: 14x14x528): 5x5/3 average pool -> 4x4, 1x1 conv to 128,
# fully connected 2048 -> 1024, classifier 1024 -> 1000 (Sec. 5); parameters include biases
def _aux(cin: int) -> tuple[int, int]:
    params = (cin * 128 + 128) + (4 * 4 * 128 * 1024 + 1024) + (1024 * 1000 + 1000)
    macs = 4 * 4 * cin * 128 + 4 * 4 * 128 * 1024 + 1024 * 1000
    return params, macs


_AUX_PARAMS = _aux(512)[0] + _aux(528)[0]
_AUX_MACS = _aux(512)[1] + _aux(528)[1]


@exercise("02.3", "aux_params", "aux_macs", "aux_largest_layer")
def _aux_heads(aux_params, aux_macs, aux_largest_layer):
    both = {0.5: "that is one head: GoogLeNet has two auxiliary classifiers (after 4a and 4d)"}
    whole = ("is that the whole training network? the heads' share is the training count minus the inference "
             "count (mode=\"eval\")")
    for name, got, want in (("aux_params", aux_params, _AUX_PARAMS), ("aux_macs", aux_macs, _AUX_MACS)):
        if is_number(got) and float(got) > 1.8 * want:
            return f"`{name}` is {float(got) / want:.3g}x too large: {whole}"
    hint = first_hint(
        count_hint("aux_params", aux_params, _AUX_PARAMS, Mistakes(ratios=both)),
        count_hint("aux_macs", aux_macs, _AUX_MACS, Mistakes(ratios={**both, **FLOPS})))
    if hint:
        return hint
    if not isinstance(aux_largest_layer, str):
        return "`aux_largest_layer` should be a layer's name, as in the count's rows: 'conv', 'fc' or 'classifier'"
    name = aux_largest_layer.strip().split("/")[-1].lower()
    if name not in ("conv", "fc", "classifier"):
        return f"`aux_largest_layer` should be one of 'conv', 'fc', 'classifier' (a head's layers), got {name!r}"
    if name != "fc":
        return (f"`aux_largest_layer` is not right: compare each layer's inputs x outputs; '{name}' is not the "
                "largest")
    return None
