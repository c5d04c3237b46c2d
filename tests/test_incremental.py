"""Tests for course.incremental: every loss against arithmetic written out here in numpy, not against the code."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from course import incremental as inc
from course.integrity import IntegrityError
from course.models.simple import SmallCNN


class TinyNet(nnx.Module):
    """A softmax regression with its classifier at ``.head``: logits = x @ W + b, easy to do by hand."""

    def __init__(self, n_in: int, n_out: int, *, rngs: nnx.Rngs):
        self.head = nnx.Linear(n_in, n_out, rngs=rngs)

    def __call__(self, x):
        return self.head(x.reshape(x.shape[0], -1))


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_cross_entropy(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def set_head(model, w, b):
    model.head.kernel[...] = jnp.asarray(w, jnp.float32)
    model.head.bias[...] = jnp.asarray(b, jnp.float32)


X = np.array([[1.0, 0.5, -1.0], [0.0, 2.0, 1.0], [-1.5, 0.5, 0.5], [0.5, -1.0, 2.0]], np.float32)  # (4, 3)
W_OLD = np.array([[0.5, -1.0], [1.0, 0.0], [-0.5, 0.5]], np.float32)  # (3 inputs, 2 old classes)
B_OLD = np.array([0.1, -0.2], np.float32)


def tiny_increment(**kw):
    """Old classes {0, 1}, one new class {2}; old model = W_OLD, B_OLD."""
    old = TinyNet(3, 2, rngs=nnx.Rngs(0))
    set_head(old, W_OLD, B_OLD)
    new = (X, np.array([2, 2, 2, 2], np.int32))
    olddata = (np.concatenate([X, -X]), np.array([0, 1, 0, 1, 1, 0, 1, 0], np.int32))
    return inc.Increment(old, [0, 1], [2], new=new, old=olddata, build=lambda n: TinyNet(3, n, rngs=nnx.Rngs(5)),
                         **kw)


# ------------------------------------------------------------------------------------------------- expansion
def test_expand_head_keeps_old_logits_exactly():
    model = SmallCNN(1, 5, channels=(4, 8, 8), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1))
    before = np.asarray(model(x))
    grown = inc.expand_head(model, 7, rngs=nnx.Rngs(3))
    after = np.asarray(grown(x))
    assert after.shape == (6, 7)
    assert np.array_equal(after[:, :5], before)  # bit for bit, not approximately
    assert model.head.kernel.shape == (8, 5)  # the old model is untouched
    assert np.array_equal(np.asarray(grown.head.kernel[...])[:, :5], np.asarray(model.head.kernel[...]))
    assert not np.allclose(after[:, 5:], 0)  # new columns are initialised, not zero
    # the body is a copy: training the grown model must not change the old one
    grown.conv1.kernel[...] = grown.conv1.kernel[...] + 1.0
    assert np.array_equal(np.asarray(model(x)), before)


def test_expand_head_errors_name_the_fix():
    model = TinyNet(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_classes=4 must be larger"):
        inc.expand_head(model, 4, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="head="):
        inc.expand_head(model, 6, rngs=nnx.Rngs(0), head="classifier")


# ------------------------------------------------------------------------------------------------- loss terms
def test_distillation_loss_by_hand():
    student = np.array([[1.0, 2.0, 5.0], [0.0, -1.0, 3.0]], np.float32)
    teacher = np.array([[2.0, 0.0, -9.0], [1.0, 1.0, 7.0]], np.float32)
    mask = np.array([True, True, False])  # the third class is new: not distilled
    T = 2.0
    # written out: p = softmax(teacher[:, :2] / T), q = softmax(student[:, :2] / T), KL = sum p log(p / q)
    p1 = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    q1 = np.exp([0.5, 1.0]) / np.exp([0.5, 1.0]).sum()
    p2 = np.array([0.5, 0.5])
    q2 = np.exp([0.0, -0.5]) / np.exp([0.0, -0.5]).sum()
    kl = ((p1 * np.log(p1 / q1)).sum() + (p2 * np.log(p2 / q2)).sum()) / 2
    got = float(inc.distillation_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(mask), T))
    assert got == pytest.approx(kl, rel=1e-5)
    assert float(inc.distillation_loss(jnp.asarray(teacher), jnp.asarray(teacher), jnp.asarray(mask), T)) \
        == pytest.approx(0.0, abs=1e-6)


def test_ewc_penalty_by_hand():
    params = {"a": {"kernel": jnp.array([1.0, 2.0, 3.0])}, "b": {"bias": jnp.array([[0.5]])}}
    anchor = {"a": {"kernel": jnp.array([1.0, 0.0, 1.0])}, "b": {"bias": jnp.array([[1.5]])}}
    fisher = {"a": {"kernel": jnp.array([9.0, 0.5, 2.0])}, "b": {"bias": jnp.array([[4.0]])}}
    # 9 * 0^2 + 0.5 * 2^2 + 2 * 2^2 + 4 * (-1)^2 = 0 + 2 + 8 + 4
    assert float(inc.ewc_penalty(params, fisher, anchor)) == pytest.approx(14.0)


def test_fisher_diagonal_matches_softmax_closed_form():
    """For logits z = x W + b, d log p_y / d b_k = [y = k] - p_k, so sum_y p_y (.)^2 = p_k (1 - p_k), and
    the kernel's entry (i, k) gets x_i^2 p_k (1 - p_k); the softmax runs over the old classes only."""
    grown = tiny_increment().grown()  # 3 outputs, the first two the old model's
    w = np.asarray(grown.head.kernel[...])
    z = X @ W_OLD + B_OLD  # old-class logits (4, 2)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    fb = (p * (1 - p)).mean(0)  # (2,)
    fw = ((X ** 2)[:, :, None] * (p * (1 - p))[:, None, :]).mean(0)  # (3, 2)
    f = inc.fisher_diagonal(grown, X, classes=[0, 1], batch_size=3)  # 4 images in batches of 3: tests padding
    np.testing.assert_allclose(np.asarray(f["head"]["bias"]), [*fb, 0.0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(f["head"]["kernel"]), np.c_[fw, np.zeros(3)], rtol=1e-5, atol=1e-7)
    assert w.shape == (3, 3)


# ------------------------------------------------------------------------------------------------- strategies
W_NOW = np.array([[0.0, -1.0, 1.0], [1.5, 0.5, -0.5], [-0.5, 1.0, 0.25]], np.float32)  # moved away from W_OLD
B_NOW = np.array([0.0, 0.3, -0.1], np.float32)
Y3 = np.array([2, 0, 2, 1], np.int32)


def strategy_loss(strategy, increment):
    plan = strategy.prepare(increment)
    set_head(plan.model, W_NOW, B_NOW)
    loss, logits = strategy.loss(plan.model, jnp.asarray(X), jnp.asarray(Y3), plan.params)
    np.testing.assert_allclose(np.asarray(logits), X @ W_NOW + B_NOW, rtol=1e-5, atol=1e-6)
    return float(loss), plan


def test_naive_and_rehearsal_loss_is_cross_entropy_over_all_classes():
    ce = np_cross_entropy(X @ W_NOW + B_NOW, Y3)
    for strategy in (inc.Naive(), inc.Rehearsal(size=4)):
        loss, _ = strategy_loss(strategy, tiny_increment())
        assert loss == pytest.approx(ce, rel=1e-5)


def test_lwf_loss_is_cross_entropy_plus_distillation_at_T2():
    alpha, T = 0.7, 2.0
    z = X @ W_NOW + B_NOW  # (4, 3)
    teacher = X @ W_OLD + B_OLD  # the old model's outputs on the same (new) images, (4, 2)
    p = np.exp(teacher / T) / np.exp(teacher / T).sum(1, keepdims=True)
    q = np.exp(z[:, :2] / T) / np.exp(z[:, :2] / T).sum(1, keepdims=True)
    kl = (p * np.log(p / q)).sum(1).mean()
    loss, _ = strategy_loss(inc.LwF(alpha=alpha, T=T), tiny_increment())
    assert loss == pytest.approx(np_cross_entropy(z, Y3) + alpha * kl, rel=1e-5)


def test_ewc_loss_is_cross_entropy_plus_half_lambda_fisher_quadratic():
    lam = 30.0
    loss, plan = strategy_loss(inc.EWC(lam=lam), tiny_increment())
    fw, fb = np.asarray(plan.params["fisher"]["head"]["kernel"]), np.asarray(plan.params["fisher"]["head"]["bias"])
    w_star, b_star = np.c_[W_OLD, np.zeros(3)], np.r_[B_OLD, 0.0]  # new column: F = 0 there, anchor irrelevant
    w_star[:, 2] = np.asarray(plan.params["anchor"]["head"]["kernel"])[:, 2]
    penalty = (fw * (W_NOW - w_star) ** 2).sum() + (fb * (B_NOW - b_star) ** 2).sum()
    assert penalty > 0.01  # the test would be empty if the penalty were ~0
    assert loss == pytest.approx(np_cross_entropy(X @ W_NOW + B_NOW, Y3) + lam / 2 * penalty, rel=1e-5)


def test_every_strategy_shares_one_params_structure():
    """The train step compiles once for all strategies only if their loss params have one tree structure."""
    increment = tiny_increment()
    structures = {s.name: jax.tree.structure(s.prepare(increment).params)
                  for s in (inc.Naive(), inc.Rehearsal(4), inc.LwF(), inc.EWC(), inc.Joint())}
    assert len(set(structures.values())) == 1, structures
    assert all(s.loss is inc.incremental_loss for s in (inc.Naive(), inc.LwF(), inc.EWC()))


def test_increment_requires_old_classes_first():
    old = TinyNet(3, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="relabel=True"):
        inc.Increment(old, [5, 6], [0], new=(X, np.zeros(4, np.int32)), old=(X, np.zeros(4, np.int32)))


def test_plans_train_on_the_right_data_and_report_memory():
    increment = tiny_increment()
    naive = inc.Naive().prepare(increment)
    assert len(naive.x) == 4 and naive.memory.nbytes == 0
    reh = inc.Rehearsal(size=4).prepare(increment)
    assert len(reh.x) == 4 + 4 and sorted(reh.y[4:].tolist()) == [0, 0, 1, 1]
    assert reh.memory.nbytes == 4 * (3 * 4 + 4)  # 4 exemplars of 3 float32 values + an int32 label each
    assert inc.LwF().prepare(increment).memory.nbytes == 4 * (3 * 2 + 2)  # the old model: 8 weights
    assert inc.EWC().prepare(increment).memory.nbytes == 2 * 4 * 8  # Fisher and anchor of the old weights
    joint = inc.Joint().prepare(increment)
    assert len(joint.x) == 8 + 4 and joint.model(jnp.asarray(X)).shape == (4, 3)


# ------------------------------------------------------------------------------------------------- memory
def test_exemplar_memory_stays_at_size_and_keeps_every_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2, 2, 1)).astype(np.float32)
    y = np.repeat(np.arange(10), 30).astype(np.int32)
    x[:, 0, 0, 0] = y  # each image remembers its class
    mem = inc.ExemplarMemory(size=17, seed=0)
    for step, classes in enumerate([[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]]):
        sel = np.isin(y, classes)
        mem.add(x[sel], y[sel])
        seen = sorted(c for task in [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]][:step + 1] for c in task)
        counts = mem.counts()
        assert len(mem) == 17 and len(mem.x) == 17 and len(mem.y) == 17
        assert sorted(counts) == seen and min(counts.values()) >= 1
        assert max(counts.values()) - min(counts.values()) <= 1  # class-balanced
        assert np.array_equal(mem.x[:, 0, 0, 0], mem.y)  # every exemplar sits under its own class
    assert mem.counts() == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 1, 8: 1, 9: 1}  # 17 = 7 x 2 + 3 x 1
    small = inc.ExemplarMemory(size=3).add(x[:90], y[:90])  # classes 0, 1, 2: one exemplar each
    with pytest.raises(ValueError, match="size >= 4"):
        small.add(x[90:120], y[90:120])


def test_exemplar_memory_shrinks_by_keeping_the_first_exemplars():
    x = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
    y = np.repeat([0, 1], 20).astype(np.int32)
    mem = inc.ExemplarMemory(size=8, seed=1).add(x, y)
    first = mem.x[mem.y == 0][:2].ravel().tolist()
    mem.add(x[:10] + 100, np.full(10, 2, np.int32))
    mem.add(x[:10] + 200, np.full(10, 3, np.int32))
    assert mem.x[mem.y == 0].ravel().tolist() == first  # 4 per class -> 2 per class, the first two kept


# ------------------------------------------------------------------------------------------------- evaluation
def test_task_incremental_masking_and_accuracies():
    tasks = [[0, 1], [2, 3]]
    logits = np.array([[1.0, 0.0, 5.0, 0.0],   # label 0: class-IL says 2 (wrong), within task {0,1} says 0
                       [0.0, 2.0, 0.0, 1.0],   # label 1: right in both
                       [3.0, 0.0, 1.0, 2.0],   # label 3: class-IL says 0, task {2,3} says 3
                       [0.0, 0.0, 1.0, 4.0]])  # label 2: wrong in both (3 beats 2)
    y = np.array([0, 1, 3, 2])
    masked = inc.task_il_logits(logits, y, tasks)
    assert np.isneginf(masked[0, 2:]).all() and np.isneginf(masked[2, :2]).all()
    np.testing.assert_array_equal(masked[0, :2], [1.0, 0.0])
    acc = inc.accuracies(logits, y, tasks)
    assert acc["class-IL"] == {"old": 0.5, "new": 0.0, "all": 0.25}
    assert acc["task-IL"] == {"old": 1.0, "new": 0.5, "all": 0.75}
    with pytest.raises(ValueError, match="labels \\[7\\]"):
        inc.task_il_logits(logits, np.array([0, 1, 3, 7]), tasks)


def test_per_class_accuracy_marks_absent_classes_nan():
    got = inc.per_class_accuracy(np.array([[2.0, 0, 0], [0, 1.0, 0], [2.0, 0, 0]]), np.array([0, 0, 1]), 3)
    assert got[0] == 0.5 and got[1] == 0.0 and np.isnan(got[2])


# ------------------------------------------------------------------------------------------------- end to end
def test_run_trains_and_reports_both_scenarios():
    increment = tiny_increment()
    test = (np.concatenate([X, -X]), np.array([2, 2, 2, 2, 0, 1, 0, 1], np.int32))
    result = inc.run(inc.Naive(), increment, test, epochs=2, batch_size=2, tx=optax.adam(0.1))
    assert set(result.acc) == {"class-IL", "task-IL"}
    assert result.acc["task-IL"]["new"] == 1.0  # one new class: within its task the answer is forced
    assert len(result.history.epoch) == 2
    assert "naive" in inc.format_results([result])


# ------------------------------------------------------------------------------------------------- issue 16
class BNNet(nnx.Module):
    """Linear - BatchNorm - head: a teacher that normalised with batch statistics would answer differently."""

    def __init__(self, n_out: int = 2, *, rngs: nnx.Rngs):
        self.body = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, n_out, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.body(x))))


def test_lwf_teacher_uses_eval_mode_and_its_own_running_statistics():
    old = BNNet(rngs=nnx.Rngs(0))
    old.bn.mean[...] = jnp.array([0.5, -1.0, 2.0, 0.0])  # running statistics of the old model, not of any batch
    old.bn.var[...] = jnp.array([4.0, 0.25, 1.0, 9.0])
    old.eval()
    want = np.asarray(old(jnp.asarray(X)))  # the old model at test time, (4, 2)
    grown = inc.expand_head(old, 3, rngs=nnx.Rngs(1))
    params = inc.loss_params(grown, [0, 1], 3, alpha=1.0)
    student = nnx.clone(grown)
    student.bn.mean[...] = jnp.zeros(4)  # the student's statistics have moved on, and it is in train mode
    student.bn.var[...] = jnp.ones(4)
    student.train()
    got = np.asarray(inc.teacher(student, params)(jnp.asarray(X)))[:, :2]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    batch_stats = np.asarray(student(jnp.asarray(X)))[:, :2]  # what a train-mode teacher would have said
    assert np.abs(batch_stats - want).max() > 0.1  # the test can tell the two apart
    assert student.bn.use_running_average is False  # the student is left in train mode


def test_new_labels_outside_the_grown_label_space_are_refused_with_the_fix():
    old = TinyNet(3, 2, rngs=nnx.Rngs(0))
    olddata = (X, np.array([0, 1, 0, 1], np.int32))
    with pytest.raises(ValueError, match=r"GROWN label space.*grown_labels\(y, 2\)"):
        inc.Increment(old, [0, 1], [2, 3], new=(X, np.array([0, 1, 0, 1], np.int32)), old=olddata)
    np.testing.assert_array_equal(inc.grown_labels(np.array([0, 1, 1]), 2), [2, 3, 3])
    inc.Increment(old, [0, 1], [2, 3], new=(X, inc.grown_labels(np.array([0, 1, 0, 1]), 2)), old=olddata)


def test_save_and_load_weights_round_trip_with_the_label_space(tmp_path):
    model = SmallCNN(1, 5, channels=(4, 8, 8), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    inc.save_weights(tmp_path / "m", model, list("abcde"))
    build = lambda n: SmallCNN(1, n, channels=(4, 8, 8), rngs=nnx.Rngs(7))  # noqa: E731 other initial weights
    assert not np.array_equal(np.asarray(build(5)(x)), np.asarray(model(x)))
    loaded, classes = inc.load_weights(tmp_path / "m", build)
    assert classes == list("abcde") and loaded.head.kernel.shape == (8, 5)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))  # same program: bit for bit
    with pytest.raises(ValueError, match="5 outputs but 6 class names"):
        inc.save_weights(tmp_path / "n", model, list("abcdef"))
    with pytest.raises(IntegrityError, match="nothing does not exist; save the model again with save_weights"):
        inc.saved_classes(tmp_path / "nothing")


def test_preallocated_outputs_are_masked_out_of_the_loss():
    """A 3-output head used for 2 classes: the loss equals cross-entropy over the 2 active outputs only."""
    model = TinyNet(3, 3, rngs=nnx.Rngs(0))
    set_head(model, W_NOW, B_NOW)
    y = np.array([0, 1, 1, 0], np.int32)
    params = inc.loss_params(model, [], 3, active=[0, 1])
    loss, _ = inc.incremental_loss(model, jnp.asarray(X), jnp.asarray(y), params)
    z = X @ W_NOW + B_NOW
    assert float(loss) == pytest.approx(np_cross_entropy(z[:, :2], y), rel=1e-5)
    grads = nnx.grad(lambda m: inc.incremental_loss(m, jnp.asarray(X), jnp.asarray(y), params)[0])(model)
    assert np.abs(np.asarray(grads["head"]["kernel"][...])[:, 2]).max() == 0.0  # the unused output does not move


def test_sequence_accuracy_matrix_and_forgetting_by_hand():
    acc = np.array([[1.0, np.nan, np.nan], [0.5, 0.9, np.nan], [0.25, 0.3, 0.8]])
    r = inc.SequenceResult("x", acc, acc)
    assert r.average == pytest.approx((0.25 + 0.3 + 0.8) / 3)
    assert r.forgetting == pytest.approx(((1.0 - 0.25) + (0.9 - 0.3)) / 2)  # best before the end minus the end
    logits = np.array([[2.0, 1.0, 0.0, 5.0], [0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 1.0, 2.0]])
    row, trow = inc.task_matrix_row(logits, np.array([0, 1, 2]), [[0, 1], [2, 3]], 3)
    np.testing.assert_array_equal(row[:2], [0.5, 0.0])   # class-IL: image 0 is called 3
    np.testing.assert_array_equal(trow[:2], [1.0, 0.0])  # task-IL: within {0, 1} it is a 0; image 2 still a 3
    assert np.isnan(row[2])


def test_run_sequence_reloads_trains_and_fills_the_lower_triangle(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 16).astype(np.int32)
    x = (rng.normal(size=(64, 3)) + 3 * np.eye(3)[y % 3] * (1 + (y // 3))[:, None]).astype(np.float32)
    build = lambda n: TinyNet(3, n, rngs=nnx.Rngs(0))  # noqa: E731
    first = build(2)
    inc.save_weights(tmp_path / "t0", first, ["a", "b"])
    res = inc.run_sequence(inc.Rehearsal(4), [[0, 1], [2, 3]], (x, y), (x, y), tmp_path / "t0", build,
                           tmp_path / "run", epochs=2, batch_size=8, tx=optax.adam(0.05))
    assert res.acc.shape == (2, 2) and np.isnan(res.acc[0, 1]) and not np.isnan(res.acc[1]).any()
    assert inc.saved_classes(tmp_path / "run" / "task1") == ["a", "b", "2", "3"]
    with pytest.raises(ValueError, match="in order"):
        inc.run_sequence(inc.Naive(), [[2, 3], [0, 1]], (x, y), (x, y), tmp_path / "t0", build, tmp_path / "r2",
                         epochs=1)
