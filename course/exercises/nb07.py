"""Checks of notebook 07 (training at scale): the counts behind the timings, which the timings themselves are not
(they depend on the machine; the folded solutions discuss them)."""
from __future__ import annotations

from collections.abc import Mapping

from course.exercises import Mistakes, count_hint, exercise, first_hint, mapping_hint

# small_cnn's forward MACs per image on s x s x 1 inputs (course.counting; tests/test_exercises.py recomputes them)
SMALL_CNN_MACS = {16: 627_328, 32: 2_507_392, 64: 10_027_648}


@exercise("07.1", "macs_small_cnn")
def _sizes(macs_small_cnn: Mapping):
    hint = mapping_hint("macs_small_cnn", macs_small_cnn, tuple(SMALL_CNN_MACS))
    if hint:
        return hint + " (one entry per input size)"
    for s, want in SMALL_CNN_MACS.items():
        hint = count_hint(f"macs_small_cnn[{s}]", macs_small_cnn[s], want, Mistakes(ratios={
            128: "that is a batch of 128: give the MACs of one image",
            2: "give multiply-accumulates (MACs), not FLOPs (2 per MAC)",
            3: "give the forward pass's MACs (a train step costs about 3 times them)",
            6: "give the forward pass's MACs, not a train step's FLOPs"}))
        if hint:
            return hint
    return None


@exercise("07.2", "updates_512", "updates_4x128", inputs=("ds",))
def _accumulation(updates_512, updates_4x128, ds):
    n, epochs = len(ds.y_train), 4
    drop = "`fit` drops each epoch's incomplete last batch"
    return first_hint(
        count_hint("updates_512", updates_512, epochs * (n // 512), Mistakes(values={
            epochs * -(-n // 512): drop, epochs * n / 512: "updates are whole: " + drop})),
        count_hint("updates_4x128", updates_4x128, epochs * (n // 128) // 4, Mistakes(values={
            epochs * (n // 128): "that is the number of micro-batches: MultiSteps updates once every 4 of them",
            epochs * -(-n // 128) // 4: drop,
            epochs * (n // 128 // 4): "the micro-batches left over at the end of an epoch carry over into the next: "
                                      "count the micro-batches of all 4 epochs, then group them by 4",
            epochs * (n // 128) / 4: "an update happens only once 4 micro-batches are complete: a whole number"})))
