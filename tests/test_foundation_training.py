"""course.training: determinism, learning, traced loss parameters, evaluation, gradient norms; course.viz."""
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest
from flax import nnx

from course import data, models, training, viz

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def digits16():
    return data.digits(canvas=16)


def test_fit_is_deterministic_and_learns(digits16):
    runs = []
    for _ in range(2):
        m = models.build("small_cnn", seed=0)
        runs.append(training.fit(m, digits16, epochs=3, batch_size=64, lr=3e-3, seed=0, verbose=False))
    assert runs[0].train_loss == runs[1].train_loss and runs[0].test_accuracy == runs[1].test_accuracy
    assert runs[0].train_loss[-1] < runs[0].train_loss[0]
    assert runs[0].test_accuracy[-1] > 0.5  # chance is 0.1


def test_fit_prints_one_rounded_line_per_epoch(digits16, capsys):
    training.fit(models.build("mlp"), digits16, epochs=2, verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  train loss ")


def test_evaluate_matches_predict(digits16):
    m = models.build("small_cnn")
    x, y = digits16.x_test[:100], digits16.y_test[:100]
    logits = training.predict(m, x, batch_size=32)  # 100 = 3 full batches + a padded one
    ev = training.evaluate(m, x, y, batch_size=32)
    assert ev["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y))
    ce = -np.take_along_axis(logits - np.log(np.exp(logits).sum(-1, keepdims=True)), y[:, None], 1).mean()
    assert ev["loss"] == pytest.approx(ce, rel=1e-5)


def test_train_eval_measures_a_fixed_training_subset_like_the_test_split(digits16):
    m = models.build("mlp", seed=0)
    h = training.fit(m, digits16, epochs=2, lr=3e-3, seed=3, verbose=False, train_eval=300)
    assert len(h.train_eval_accuracy) == len(h.train_eval_loss) == 2
    pick = np.sort(np.random.default_rng(3).permutation(len(digits16.y_train))[:300])
    last = training.evaluate(m, digits16.x_train[pick], digits16.y_train[pick])  # eval mode, after the last epoch
    assert h.train_eval_accuracy[-1] == last["accuracy"] and h.train_eval_loss[-1] == last["loss"]
    assert h.final()["train_eval_accuracy"] == last["accuracy"]
    with pytest.raises(ValueError, match="train_eval"):
        training.fit(models.build("mlp"), digits16, epochs=1, verbose=False, train_eval=0)


def test_loss_params_are_traced_not_compiled_in(digits16):
    def scaled(model, x, y, w):
        loss, logits = training.cross_entropy(model, x, y)
        return w * loss, logits

    traces = []

    def counted(model, x, y, w):
        traces.append(1)  # Python runs only while jax traces the step, i.e. once per compile
        return scaled(model, x, y, w)

    m = models.build("mlp")
    opt = training.make_optimizer(m, tx=optax.sgd(0.1))
    x, y = jnp.asarray(digits16.x_train[:32]), jnp.asarray(digits16.y_train[:32])
    before = np.asarray(m.head.kernel[...]).copy()
    training.train_step(m, opt, x, y, counted, jnp.float32(0.0))  # weight 0: no gradient, no change
    np.testing.assert_array_equal(before, m.head.kernel[...])
    training.train_step(m, opt, x, y, counted, jnp.float32(1.0))
    assert not np.array_equal(before, m.head.kernel[...])
    assert len(traces) == 1  # a new weight, no new compile


def test_layer_grad_norms_in_model_order(digits16):
    m = models.build("small_cnn")
    norms = training.layer_grad_norms(m, digits16.x_train[:64], digits16.y_train[:64])
    assert list(norms) == ["conv1", "conv2", "conv3", "head"]
    assert all(v > 0 for v in norms.values())


def test_batch_larger_than_data_is_a_clear_error(digits16):
    with pytest.raises(ValueError, match="batch_size=5000 is larger than the 1438 training examples"):
        training.fit(models.build("mlp"), digits16, batch_size=5000)


def test_image_grid_lays_out_every_image_and_centres_a_diverging_scale():
    fig = viz.image_grid(np.random.rand(10, 8, 8, 1), titles=[str(i) for i in range(10)], cols=4)
    assert len(fig.axes) == 12 and sum(bool(ax.images) for ax in fig.axes) == 10
    signed = viz.image_grid(np.array([[[-2.0, 1.0]]]), symmetric=True)
    assert signed.axes[0].images[0].get_clim() == (-2.0, 2.0)


def test_fits_with_the_same_learning_rate_share_one_compiled_step(digits16):
    traces = []

    def counted(model, x, y, params):
        traces.append(1)  # once per compile of the step
        return training.cross_entropy(model, x, y)

    for seed in (0, 1):
        training.fit(models.build("mlp", seed=seed), digits16, epochs=1, lr=0.0123, verbose=False, loss_fn=counted)
    assert len(traces) == 1


def test_the_pure_step_equals_a_plain_nnx_loop(digits16):
    """fit's flat-state, donated jax.jit step against the textbook NNX loop (nnx.jit on the modules, written here)."""
    @nnx.jit
    def reference_step(model, opt, x, y):
        def f(m):
            logits = m(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = nnx.value_and_grad(f)(model)
        opt.update(model, grads)
        return loss

    m = models.build("small_cnn", seed=3)
    twin = nnx.clone(m)  # shares buffers with m at first: the donated step must not delete them
    hist = training.fit(m, digits16, epochs=2, batch_size=64, lr=2e-3, seed=5, verbose=False)
    opt = nnx.Optimizer(twin, optax.adam(2e-3), wrt=nnx.Param)
    twin.train()
    per_epoch = []
    for epoch in (1, 2):
        losses = [reference_step(twin, opt, jnp.asarray(xb), jnp.asarray(yb)) for xb, yb in
                  data.batches(digits16.x_train, digits16.y_train, 64, shuffle=True, seed=5 + epoch, drop_last=True)]
        per_epoch.append(float(np.mean(losses)))
    np.testing.assert_allclose(hist.train_loss, per_epoch, rtol=1e-5)
    np.testing.assert_allclose(m.head.kernel[...], twin.head.kernel[...], rtol=1e-4, atol=1e-6)
