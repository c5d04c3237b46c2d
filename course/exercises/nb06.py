"""Checks of notebook 06 (incremental learning): the memory each strategy keeps, a strategy the student writes,
the two-rate optimizer, and a correction of the head's bias. The training runs stay in the folded solutions; the
checks test what those runs are built from."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from course.exercises import Mistakes, count_hint, curve_hint, exercise, first_hint, mapping_hint

SIZES = (20, 50, 200)


@exercise("06.1", "rehearsal_bytes", "ewc_bytes", inputs=("increments", "SEEDS"))
def _memory(rehearsal_bytes: Mapping, ewc_bytes, increments, SEEDS):
    from course import incremental as inc

    increment = increments[SEEDS[0]]
    image = increment.old[0][0].nbytes  # one stored image
    hint = mapping_hint("rehearsal_bytes", rehearsal_bytes, SIZES)
    if hint:
        return hint + " (one entry per memory size M)"
    for m in SIZES:
        hint = count_hint(f"rehearsal_bytes[{m}]", rehearsal_bytes[m], m * (image + 4), Mistakes(
            ratios={image / (image + 4): "each exemplar keeps its int32 label too",
                    1 / 1024: "give bytes, not KiB"},
            values={m * image // 4 + 4 * m: "the images are float32: 4 bytes per pixel",
                    m * (image // 4 + 4): "the images are float32: 4 bytes per pixel"}))
        if hint:
            return hint
    weights = inc.param_count(increment.old_model)
    return count_hint("ewc_bytes", ewc_bytes, 8 * weights, Mistakes(ratios={
        0.5: "EWC keeps two copies of the weights: the Fisher diagonal and the old weights it pulls towards",
        0.25: "EWC keeps two float32 copies of the weights, 4 bytes per weight each",
        1 / 1024: "give bytes, not KiB"}))


@exercise("06.2", "RehearsalLwF", inputs=("increments", "SEEDS"))
def _rehearsal_lwf(RehearsalLwF, increments, SEEDS):
    import jax

    from course import incremental as inc

    if not (isinstance(RehearsalLwF, type) and issubclass(RehearsalLwF, inc.Strategy)):
        return "`RehearsalLwF` should be a class derived from inc.Rehearsal (a Strategy), taking the memory size M"
    increment = increments[SEEDS[0]]
    plan, plain = RehearsalLwF(20).prepare(increment), inc.Rehearsal(20).prepare(increment)
    if len(plan.x) != len(plain.x) or not np.array_equal(plan.y, plain.y):
        return "train on what plain rehearsal trains on: the new data plus the M exemplars (super().prepare)"
    for key, want in (("alpha", 1.0), ("T", 2.0)):
        got = plan.params.get(key)
        if got is None or not np.isclose(float(np.asarray(got)), want):
            return (f"params[{key!r}] is {None if got is None else float(np.asarray(got)):g}: the distillation "
                    f"{'weight' if key == 'alpha' else 'temperature'} asked for is {want:g}")
    if jax.tree.structure(plan.params) != jax.tree.structure(plain.params) or any(
            np.asarray(a).dtype != np.asarray(b).dtype or np.shape(a) != np.shape(b)
            for a, b in zip(jax.tree.leaves(plan.params), jax.tree.leaves(plain.params))):
        return ("change the values of `params`, not its structure or dtypes (np.float32 scalars): a different "
                "pytree compiles the train step again")
    return None


@exercise("06.3", "tx_slow", "tx_frozen", inputs=("LR",))
def _two_rates(tx_slow, tx_frozen, LR):
    import jax
    import jax.numpy as jnp

    params = {"conv1": {"kernel": jnp.ones(3)}, "head": {"kernel": jnp.ones(2)}}
    grads = {"conv1": {"kernel": jnp.ones(3)}, "head": {"kernel": jnp.ones(2)}}

    # the first Adam step moves each parameter by its learning rate: both optimizers in one compiled program
    first = jax.jit(lambda p, g: [tx.update(g, tx.init(p), p)[0] for tx in (tx_slow, tx_frozen)])(params, grads)
    for name, updates, want in zip(("tx_slow", "tx_frozen"), first, (LR / 10, 0.0)):
        head, body = float(-updates["head"]["kernel"][0]), float(-updates["conv1"]["kernel"][0])
        if not np.isclose(head, LR, rtol=1e-3):
            if np.isclose(body, LR, rtol=1e-3):
                return f"`{name}` gives the body the head's rate: finetune_tx(lr_head, lr_pretrained) takes the head's first"
            return f"`{name}`: the head should keep the notebook's learning rate LR (its first step is {head:.2g})"
        if not np.isclose(body, want, rtol=1e-3, atol=1e-12):
            return (f"`{name}`: the body's first step is {body / LR:.3g} x the head's; it should be "
                    f"{'a tenth' if want else 'zero (frozen)'}")
    return None


SHIFTS = tuple(range(0, 15, 2))


@exercise("06.4", "shift_new_logits", "class_il_all", inputs=("z_naive", "SEEDS", "TASKS", "data"))
def _bias(shift_new_logits, class_il_all, z_naive, SEEDS, TASKS, data):
    from course import incremental as inc

    z = np.asarray(z_naive[SEEDS[0]])
    before = z.copy()
    out = np.asarray(shift_new_logits(z, 3.0))
    if not np.array_equal(z, before):
        return "`shift_new_logits` changed z itself: work on a copy, or each c adds to the ones before"
    if out.shape != z.shape:
        return f"`shift_new_logits(z, c)` should keep the shape of z, {z.shape}; got {out.shape}"
    new = list(TASKS[1])
    old = [c for c in range(z.shape[1]) if c not in new]
    if not np.allclose(out[:, old], z[:, old]):
        return "leave the old classes' logits as they are: subtract c from the new classes' logits only"
    if np.allclose(out[:, new], z[:, new] + 3.0):
        return "c should be subtracted from the new classes' logits, not added"
    if not np.allclose(out[:, new], z[:, new] - 3.0, atol=1e-5):
        return "the new classes' logits should each be lowered by exactly c"
    hint = curve_hint("class_il_all", class_il_all, len(SHIFTS))
    if hint:
        return hint + f" (one accuracy per c in {list(SHIFTS)})"
    for c, got in zip(SHIFTS, class_il_all):
        want = inc.accuracies(shift_new_logits(z, c), data.y_test, TASKS)["class-IL"]["all"]
        if not np.isclose(float(got), want, atol=1e-6):
            return (f"`class_il_all` at c = {c} is not the class-IL accuracy on all classes of the shifted logits "
                    f"of seed SEEDS[0]")
    return None
