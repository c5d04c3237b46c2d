"""GoogLeNet (Inception v1): 1x1 bottleneck layers, Inception modules and auxiliary classifiers, in Flax NNX.

Szegedy et al., "Going deeper with convolutions", CVPR 2015 (arXiv:1409.4842), cited below as "the paper".

* :class:`Inception` is the module of Fig. 2(b): four branches (1x1; 1x1 reduce then 3x3; 1x1 reduce then 5x5;
  3x3/1 max pool then a 1x1 "pool proj") concatenated on channels. Its fields are Table 1's columns.
  :class:`NaiveInception` is Fig. 2(a), without the 1x1 reductions (notebook 02 prices the difference).
* :class:`GoogLeNet` is built from a *layout*: Table 1's rows as plain data (:data:`PAPER_LAYOUT`), so a reader
  holding the paper recognises every line. Two auxiliary classifiers (:class:`AuxHead`, Sec. 5) sit after
  inception 4a and 4d.
* Every 1x1 convolution is a :class:`~course.models.layers.PointwiseConv` (an einsum over channels): numerically
  the same layer as ``nnx.Conv(kernel_size=1)``, but XLA on CPU runs its backward pass many times faster, which
  is what lets notebook 03 train a GoogLeNet on a laptop (see ``course/models/layers.py``).

Train vs eval mode
------------------
The auxiliary heads exist only to help training: the paper discards them at inference. A :class:`GoogLeNet`
holds a ``deterministic`` attribute, the one NNX's ``model.train()`` / ``model.eval()`` set on every submodule
(as they do for ``nnx.Dropout``). ``deterministic=False`` (train mode, the state after construction, as for every
NNX module) computes the heads; ``deterministic=True`` (eval mode) skips them, so their cost vanishes from
``course.counting.count(model, shape, mode="eval")`` and from the compiled inference program. ``model(x)``
always returns the main logits (so ``course.training.fit`` and ``predict`` work unchanged);
:meth:`GoogLeNet.intermediates` also returns the auxiliary logits, and :func:`googlenet_loss` combines them.

Variants (registered in ``course.models``)
------------------------------------------
* ``googlenet``: the paper's network, 224x224x3, 1000 classes: convolutions with biases and ReLU, no
  BatchNorm (published about five months later, Ioffe & Szegedy, arXiv:1502.03167), local response normalization in the stem (Fig. 3), 5x5 convs, 40% dropout.
* ``googlenet_torchvision``: torchvision's ``googlenet`` structure, whose 6,624,904 parameters (aux heads off)
  it reproduces exactly: BatchNorm (eps 1e-3) after every bias-free conv, no LRN, 20% dropout, a 2x2/2 last
  max pool, and the "5x5" branch built with **3x3** kernels, a known torchvision quirk
  (torchvision/models/googlenet.py: "kernel_size=3 instead of kernel_size=5 is a known bug",
  https://github.com/pytorch/vision/issues/906). Its aux heads pool 5x5/3 as in the paper where torchvision
  uses an adaptive 4x4 average pool: same output size, so the same parameters and MACs.
  With its heads: 13,004,888, torchvision's count with ``aux_logits=True``.
* ``googlenet_mini``: the same nine Inception rows at 1/8 of the width, for 16x16x1 inputs (digits on a 16x16
  canvas, or the generated shapes), with aux heads scaled to the small maps (2x2/2 pool, 16 channels, 128
  units); a few epochs of it fit in notebook 03's CPU budget.

Convolution kernels (and the heads' hidden layer) start from He et al.'s N(0, 2/fan_in) (:data:`HE_NORMAL`); the
paper does not state its initialization. Biases start at zero.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable, Iterator, Sequence, Union

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from course.models.layers import PointwiseConv


# ----------------------------------------------------------------------------------------------------------
# The layout as plain data
@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A convolution + ReLU of the stem: ``name``, output channels, square kernel, stride."""

    name: str
    out: int
    kernel: int
    stride: int = 1


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """A max pool ``kernel`` x ``kernel`` / ``stride`` with SAME padding (112 -> 56 -> 28 -> 14 -> 7 at 224;
    identical to torchvision's ``ceil_mode=True`` pools at these sizes)."""

    kernel: int
    stride: int


@dataclasses.dataclass(frozen=True)
class LRNSpec:
    """Local response normalization (the paper's Fig. 3 "LocalRespNorm"); it has no parameters."""


@dataclasses.dataclass(frozen=True)
class InceptionRow:
    """One Inception row of Table 1: its name and the filter counts in the paper's column order."""

    name: str
    n1x1: int
    n3x3red: int
    n3x3: int
    n5x5red: int
    n5x5: int
    pool_proj: int

    @property
    def out_ch(self) -> int:
        """Channels of the concatenated output: #1x1 + #3x3 + #5x5 + pool proj."""
        return self.n1x1 + self.n3x3 + self.n5x5 + self.pool_proj

    def fields(self) -> tuple[int, ...]:
        return (self.n1x1, self.n3x3red, self.n3x3, self.n5x5red, self.n5x5, self.pool_proj)

    def scaled(self, divisor: int) -> "InceptionRow":
        """The same row with every filter count divided by ``divisor`` (rounded, at least 2)."""
        return InceptionRow(self.name, *(max(2, round(n / divisor)) for n in self.fields()))


LayoutItem = Union[ConvSpec, PoolSpec, LRNSpec, InceptionRow]


def grid_sizes(layout: Sequence[LayoutItem], height: int, width: int) -> Iterator[tuple[LayoutItem, int, int]]:
    """Each item of ``layout`` with the (H, W) of the input it reads: strided convs and pools shrink the grid
    by ceil(H / stride) (SAME padding; 224 -> 112 -> 56 -> 28 -> 14 -> 7), everything else keeps it. The one
    place the layout's geometry is worked out (the model's heads and notebook 02's channel table use it)."""
    for item in layout:
        yield item, height, width
        if isinstance(item, (ConvSpec, PoolSpec)):
            height, width = -(-height // item.stride), -(-width // item.stride)

# The paper's Table 1, top to bottom (Szegedy et al. 2014). The stem follows Fig. 3: conv 7x7/2, max pool 3x3/2,
# LocalRespNorm, conv 1x1 (Table 1's "#3x3 reduce" 64 of its second convolution row), conv 3x3 192,
# LocalRespNorm, max pool 3x3/2. Columns of the Inception rows: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj. Then avg pool 7x7/1, dropout 40%, linear (the head, built by GoogLeNet itself).
PAPER_LAYOUT: tuple[LayoutItem, ...] = (
    ConvSpec("conv1", 64, 7, 2),            # 112x112x64
    PoolSpec(3, 2),                         # 56x56x64
    LRNSpec(),
    ConvSpec("conv2_reduce", 64, 1),        # 56x56x64
    ConvSpec("conv2", 192, 3),              # 56x56x192
    LRNSpec(),
    PoolSpec(3, 2),                         # 28x28x192
    InceptionRow("3a", 64, 96, 128, 16, 32, 32),      # 28x28x256
    InceptionRow("3b", 128, 128, 192, 32, 96, 64),    # 28x28x480
    PoolSpec(3, 2),                                   # 14x14x480
    InceptionRow("4a", 192, 96, 208, 16, 48, 64),     # 14x14x512
    InceptionRow("4b", 160, 112, 224, 24, 64, 64),    # 14x14x512
    InceptionRow("4c", 128, 128, 256, 24, 64, 64),    # 14x14x512
    InceptionRow("4d", 112, 144, 288, 32, 64, 64),    # 14x14x528
    InceptionRow("4e", 256, 160, 320, 32, 128, 128),  # 14x14x832
    PoolSpec(3, 2),                                   # 7x7x832
    InceptionRow("5a", 256, 160, 320, 32, 128, 128),  # 7x7x832
    InceptionRow("5b", 384, 192, 384, 48, 128, 128),  # 7x7x1024
)

# torchvision's googlenet: the same rows, no LRN, and a 2x2/2 last max pool (torchvision/models/googlenet.py).
TORCHVISION_LAYOUT: tuple[LayoutItem, ...] = tuple(
    item for item in PAPER_LAYOUT[:15] if not isinstance(item, LRNSpec)) + (PoolSpec(2, 2),) + PAPER_LAYOUT[16:]

# The reduced network: Table 1's nine rows at 1/8 width on 16x16 inputs (3a-3b at 8x8, 4a-4e at 4x4, 5a-5b at 2x2).
MINI_LAYOUT: tuple[LayoutItem, ...] = (
    ConvSpec("conv1", 8, 3),                # 16x16x8
    PoolSpec(3, 2),                         # 8x8x8
    ConvSpec("conv2_reduce", 8, 1),         # 8x8x8
    ConvSpec("conv2", 24, 3),               # 8x8x24
    *(item.scaled(8) if isinstance(item, InceptionRow) else item for item in PAPER_LAYOUT[7:]),
)


@dataclasses.dataclass(frozen=True)
class AuxSpec:
    """An auxiliary classifier (Sec. 5): average pool ``pool``/``stride``, 1x1 conv to ``conv_ch`` + ReLU, fully
    connected ``fc`` + ReLU, dropout ``dropout``, linear to the classes; attached after each row in ``after``."""

    after: tuple[str, ...] = ("4a", "4d")
    pool: int = 5
    stride: int = 3
    conv_ch: int = 128
    fc: int = 1024
    dropout: float = 0.7


PAPER_AUX = AuxSpec()
MINI_AUX = AuxSpec(pool=2, stride=2, conv_ch=16, fc=128)  # 4x4 maps after 4a/4d -> 2x2, as 14x14 -> 4x4


# ----------------------------------------------------------------------------------------------------------
# Layers
Initializer = Callable[..., jax.Array]
# He et al. (2015, "Delving deep into rectifiers") N(0, 2/fan_in): keeps the activations' scale through a ReLU
# network without BatchNorm. The paper predates it (Caffe's BVLC reproduction used a uniform init of variance
# 1/fan_in, i.e. LeCun's); with that init googlenet_mini barely learns in notebook 03's few epochs.
HE_NORMAL = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")

def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
    """Cross-channel LRN, x / (k + alpha/size * sum of x^2 over ``size`` neighbouring channels)^beta, with Caffe's
    defaults as used by its BVLC GoogLeNet (the paper does not give the constants). No parameters. (B, H, W, C)."""
    sq = jnp.pad(x * x, [(0, 0)] * 3 + [(size // 2, (size - 1) // 2)])
    window = sum(sq[..., i:i + x.shape[-1]] for i in range(size))
    return x / (k + alpha / size * window) ** beta


class ConvUnit(nnx.Module):
    """A convolution followed by ReLU ("all the convolutions, including those inside the Inception modules, use
    rectified linear activation", Sec. 5). ``batchnorm=True``: bias-free conv, BatchNorm(eps=1e-3), ReLU, as
    torchvision's ``BasicConv2d``. 1x1 convs are :class:`PointwiseConv` (fast backward on CPU); others pad
    ``kernel // 2`` on every side, as Caffe and torchvision do (7x7/2: 224 -> 112)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, *, batchnorm: bool = False,
                 kernel_init: Initializer = HE_NORMAL, rngs: nnx.Rngs):
        if kernel == 1:
            self.conv = PointwiseConv(in_ch, out_ch, strides=stride, use_bias=not batchnorm,
                                      kernel_init=kernel_init, rngs=rngs)
        else:
            p = kernel // 2
            self.conv = nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=stride, padding=((p, p), (p, p)),
                                 use_bias=not batchnorm, kernel_init=kernel_init, rngs=rngs)
        self.bn = nnx.BatchNorm(out_ch, epsilon=1e-3, momentum=0.9, rngs=rngs) if batchnorm else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)  # (B, H', W', out_ch)
        return nnx.relu(self.bn(x) if self.bn is not None else x)


def _check_channels(x: jax.Array, in_ch: int, who: str) -> None:
    if x.ndim != 4 or x.shape[-1] != in_ch:
        raise ValueError(f"{who} expects (B, H, W, {in_ch}) inputs (channels last), got shape {tuple(x.shape)}; "
                         f"check the previous layer's output channels or transpose NCHW data to NHWC")


def max_pool_3x3_s1(x: jax.Array) -> jax.Array:
    """The Inception pool branch's 3x3/1 max pool with SAME padding: same H, W and channels. (B, H, W, C)."""
    return nnx.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")


class Inception(nnx.Module):
    """The Inception module with dimension reductions (the paper's Fig. 2b); fields are Table 1's columns.

    Branches, concatenated on channels in this order: ``conv1x1`` (#1x1); ``reduce3x3`` (#3x3 reduce, a 1x1)
    then ``conv3x3`` (#3x3); ``reduce5x5`` (#5x5 reduce) then ``conv5x5`` (#5x5, kernel ``kernel5``, 5 in the
    paper); a 3x3/1 max pool then ``pool_proj`` (a 1x1 on the *pooled* tensor). Output channels:
    n1x1 + n3x3 + n5x5 + pool_proj; height and width are kept.
    """

    def __init__(self, in_ch: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_proj: int,
                 *, batchnorm: bool = False, kernel5: int = 5, kernel_init: Initializer = HE_NORMAL,
                 rngs: nnx.Rngs):
        unit = partial(ConvUnit, batchnorm=batchnorm, kernel_init=kernel_init, rngs=rngs)
        self.in_ch = in_ch
        self.out_ch = n1x1 + n3x3 + n5x5 + pool_proj
        self.conv1x1 = unit(in_ch, n1x1)
        self.reduce3x3 = unit(in_ch, n3x3red)
        self.conv3x3 = unit(n3x3red, n3x3, 3)
        self.reduce5x5 = unit(in_ch, n5x5red)
        self.conv5x5 = unit(n5x5red, n5x5, kernel5)
        self.pool_proj = unit(in_ch, pool_proj)

    @classmethod
    def from_row(cls, in_ch: int, row: InceptionRow, **kwargs) -> "Inception":
        return cls(in_ch, *row.fields(), **kwargs)

    def branches(self, x: jax.Array) -> dict[str, jax.Array]:
        """The four branch outputs before concatenation, keyed "1x1", "3x3", "5x5", "pool"."""
        _check_channels(x, self.in_ch, f"Inception({self.in_ch} -> {self.out_ch})")
        return {"1x1": self.conv1x1(x),                        # (B, H, W, n1x1)
                "3x3": self.conv3x3(self.reduce3x3(x)),        # (B, H, W, n3x3)
                "5x5": self.conv5x5(self.reduce5x5(x)),        # (B, H, W, n5x5)
                "pool": self.pool_proj(max_pool_3x3_s1(x))}    # (B, H, W, pool_proj)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate(list(self.branches(x).values()), axis=-1)  # (B, H, W, out_ch)


class NaiveInception(nnx.Module):
    """The naive Inception module (the paper's Fig. 2a): 1x1, 3x3 and 5x5 convolutions straight on the input,
    and a 3x3/1 max pool whose ``in_ch`` channels are passed through. Output: n1x1 + n3x3 + n5x5 + in_ch
    channels, which is why stacking it makes the width grow layer after layer (Sec. 4)."""

    def __init__(self, in_ch: int, n1x1: int, n3x3: int, n5x5: int, *, rngs: nnx.Rngs):
        self.in_ch = in_ch
        self.out_ch = n1x1 + n3x3 + n5x5 + in_ch
        self.conv1x1 = ConvUnit(in_ch, n1x1, 1, rngs=rngs)
        self.conv3x3 = ConvUnit(in_ch, n3x3, 3, rngs=rngs)
        self.conv5x5 = ConvUnit(in_ch, n5x5, 5, rngs=rngs)

    def branches(self, x: jax.Array) -> dict[str, jax.Array]:
        """The four branch outputs, keyed as :meth:`Inception.branches`; "pool" is the pooled input itself."""
        _check_channels(x, self.in_ch, f"NaiveInception({self.in_ch} -> {self.out_ch})")
        return {"1x1": self.conv1x1(x), "3x3": self.conv3x3(x), "5x5": self.conv5x5(x), "pool": max_pool_3x3_s1(x)}

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate(list(self.branches(x).values()), axis=-1)  # (B, H, W, out_ch)


class AuxHead(nnx.Module):
    """An auxiliary classifier (the paper's Sec. 5): average pool 5x5/3 (14x14 -> 4x4), 1x1 conv to 128 + ReLU,
    fully connected 1024 + ReLU, dropout 70%, linear to the classes. ``in_hw`` is the (height, width) of the
    feature map it reads (one int for a square map); it fixes the FC layer's input size (4 * 4 * 128 = 2048 in
    the paper)."""

    def __init__(self, in_ch: int, num_classes: int, in_hw: int | tuple[int, int], spec: AuxSpec = PAPER_AUX, *,
                 batchnorm: bool = False, kernel_init: Initializer = HE_NORMAL, rngs: nnx.Rngs):
        self.pool, self.stride = spec.pool, spec.stride
        in_h, in_w = (in_hw, in_hw) if isinstance(in_hw, int) else (int(in_hw[0]), int(in_hw[1]))
        if min(in_h, in_w) < spec.pool:
            raise ValueError(f"the auxiliary head's {spec.pool}x{spec.pool} average pool needs a feature map of at "
                             f"least {spec.pool}x{spec.pool}, but it reads {in_h}x{in_w}: use a larger input "
                             f"size or an AuxSpec with a smaller pool")
        out_h, out_w = ((n - spec.pool) // spec.stride + 1 for n in (in_h, in_w))
        self.conv = ConvUnit(in_ch, spec.conv_ch, 1, batchnorm=batchnorm, kernel_init=kernel_init, rngs=rngs)
        self.fc = nnx.Linear(out_h * out_w * spec.conv_ch, spec.fc, kernel_init=kernel_init, rngs=rngs)
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)
        self.classifier = nnx.Linear(spec.fc, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.avg_pool(x, (self.pool, self.pool), strides=(self.stride, self.stride))  # (B, 4, 4, C)
        x = self.conv(x).reshape(x.shape[0], -1)  # (B, 4 * 4 * 128)
        x = self.dropout(nnx.relu(self.fc(x)))    # (B, 1024)
        return self.classifier(x)                 # (B, num_classes)


# ----------------------------------------------------------------------------------------------------------
class GoogLeNet(nnx.Module):
    """GoogLeNet from a layout (Table 1's rows as data), a global average pool, dropout and a linear classifier.

    Submodules are named after the paper: ``conv1``, ``conv2_reduce``, ``conv2``, ``inception3a`` ...
    ``inception5b``, ``fc``, and the auxiliary heads ``aux1`` (after 4a) and ``aux2`` (after 4d), which are
    computed only in train mode (``deterministic=False``; see the module docstring). ``aux_spec=None`` builds
    no heads. The model checks that its input is the (H, W, C) it was built for: the heads' FC layers depend on it.
    """

    def __init__(self, num_classes: int = 1000, input_shape: Sequence[int] = (224, 224, 3),
                 layout: Sequence[LayoutItem] = PAPER_LAYOUT, aux_spec: AuxSpec | None = PAPER_AUX, *,
                 batchnorm: bool = False, kernel5: int = 5, dropout: float = 0.4, kernel_init: Initializer = HE_NORMAL,
                 rngs: nnx.Rngs):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.layout = tuple(layout)
        self.deterministic = False  # train mode until model.eval(), as every NNX module
        self.aux_after = tuple(aux_spec.after) if aux_spec is not None else ()
        h, w, ch = self.input_shape
        common = dict(batchnorm=batchnorm, kernel_init=kernel_init, rngs=rngs)
        for item, h, w in grid_sizes(self.layout, h, w):
            if isinstance(item, ConvSpec):
                setattr(self, item.name, ConvUnit(ch, item.out, item.kernel, item.stride, **common))
                ch = item.out
            elif isinstance(item, InceptionRow):
                block = Inception.from_row(ch, item, kernel5=kernel5, **common)
                setattr(self, f"inception{item.name}", block)
                ch = block.out_ch
                if item.name in self.aux_after:
                    i = self.aux_after.index(item.name) + 1
                    setattr(self, f"aux{i}", AuxHead(ch, num_classes, (h, w), aux_spec, **common))
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.fc = nnx.Linear(ch, num_classes, rngs=rngs)

    def aux_heads(self) -> dict[str, AuxHead]:
        """The auxiliary heads the model holds, keyed by the row they read ("4a": aux1, ...); deleting one
        (``model.aux1 = None``) leaves the inference path untouched."""
        heads = {name: getattr(self, f"aux{i}", None) for i, name in enumerate(self.aux_after, 1)}
        return {k: v for k, v in heads.items() if v is not None}

    def intermediates(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(logits, out): ``out`` holds every row's output by name ("conv1", "3a", ...), the pooled features
        ("features") and, in train mode only, the auxiliary logits "aux1", "aux2"."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            h, w, c = self.input_shape
            raise ValueError(f"this GoogLeNet was built for {h}x{w}x{c} inputs, shaped (B, {h}, {w}, {c}) channels "
                             f"last, but got {tuple(x.shape)}; resize the images or build the model with "
                             f"input_shape={tuple(x.shape[1:])} (the auxiliary heads' FC layers depend on it)")
        out: dict[str, jax.Array] = {}
        heads = self.aux_heads()
        for item in self.layout:
            if isinstance(item, ConvSpec):
                x = out[item.name] = getattr(self, item.name)(x)
            elif isinstance(item, PoolSpec):
                x = nnx.max_pool(x, (item.kernel, item.kernel), strides=(item.stride, item.stride), padding="SAME")
            elif isinstance(item, LRNSpec):
                x = local_response_norm(x)
            else:
                x = out[item.name] = getattr(self, f"inception{item.name}")(x)
                if item.name in heads and not self.deterministic:
                    out[f"aux{self.aux_after.index(item.name) + 1}"] = heads[item.name](x)
        x = out["features"] = x.mean(axis=(1, 2))  # (B, C): the paper's 7x7/1 average pool at 224x224
        return self.fc(self.dropout(x)), out       # (B, num_classes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.intermediates(x)[0]


def googlenet_loss(model: GoogLeNet, x: jax.Array, y: jax.Array,
                   aux_weight: jax.Array | float | None = None) -> tuple[jax.Array, jax.Array]:
    """The paper's training loss (Sec. 5): main cross-entropy + ``aux_weight`` x (aux1 + aux2); 0.3 in the paper
    (used when ``aux_weight`` is None). Every head the model computed counts ("aux1", "aux2", "aux3", ... in
    ``intermediates``' output: an ``AuxSpec(after=("4a", "4b", "4d"))`` model has three). In eval mode the heads
    are not computed and the loss is the main one. Works for any model with GoogLeNet's ``intermediates``.

    Has the signature of a ``course.training`` loss function, with the weight as the traced ``loss_params``:
    weights 0.0, 0.3 and 1.0 share one compiled train step. Returns (loss, main logits).
    """
    logits, out = model.intermediates(x)
    # float32 logits: the softmax is computed in float32 under mixed precision too (course.precision)
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(z.astype(jnp.float32), y).mean()  # noqa: E731
    loss = ce(logits)
    aux = [ce(v) for k, v in out.items() if k.startswith("aux") and k[3:].isdigit()]
    if aux:
        loss = loss + (0.3 if aux_weight is None else aux_weight) * sum(aux)
    return loss, logits


# ----------------------------------------------------------------------------------------------------------
class InceptionNet(nnx.Module):
    """conv 3x3 (``stem`` channels) + ReLU - Inception - 2x2 max pool - Inception - global average pool - linear:
    the smallest network with GoogLeNet's modules, for small images (notebooks 02 and 08).

    ``rows`` are two ``(n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj)`` tuples in Table 1's column order.
    ``reduce=False`` builds the paper's naive module (Fig. 2a) with the same #1x1, #3x3 and #5x5 filters: the
    3x3 and 5x5 convolutions then read all the input channels, and the pool branch passes its input through,
    so the second module reads n1x1 + n3x3 + n5x5 + its input's channels (the growth Sec. 4 warns about).
    """

    def __init__(self, in_ch: int = 1, num_classes: int = 10, stem: int = 16,
                 rows: Sequence[Sequence[int]] = ((8, 8, 16, 4, 8, 8), (16, 16, 32, 4, 8, 8)),
                 reduce: bool = True, *, rngs: nnx.Rngs):
        if len(rows) != 2 or any(len(r) != 6 for r in rows):
            raise ValueError("rows must be two (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj) tuples, "
                             f"got {rows!r}")
        self.stem = ConvUnit(in_ch, stem, 3, rngs=rngs)
        blocks, ch = [], stem
        for n1, r3, n3, r5, n5, pp in rows:
            block = (Inception(ch, n1, r3, n3, r5, n5, pp, rngs=rngs) if reduce else
                     NaiveInception(ch, n1, n3, n5, rngs=rngs))
            blocks.append(block)
            ch = block.out_ch
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(ch, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)                                  # (B, H, W, stem)
        x = self.blocks[0](x)                             # (B, H, W, c1)
        x = nnx.max_pool(x, (2, 2), (2, 2))               # (B, H/2, W/2, c1)
        x = self.blocks[1](x).mean(axis=(1, 2))           # (B, c2)
        return self.head(x)                               # (B, num_classes)


# ----------------------------------------------------------------------------------------------------------
from course.models.registry import register  # noqa: E402


@partial(nnx.jit, static_argnames=("num_classes", "input_shape", "layout", "aux_spec", "batchnorm", "kernel5",
                                   "dropout"))
def _construct(rngs: nnx.Rngs, num_classes: int, input_shape: tuple[int, ...], layout: tuple, aux_spec: AuxSpec,
               batchnorm: bool = False, kernel5: int = 5, dropout: float = 0.4) -> GoogLeNet:
    """Build under ``nnx.jit``: the ~130 parameter initializers become one compiled program (which the course's
    persistent compilation cache keeps), instead of one compile per distinct shape, tens of seconds on a busy
    CPU. The parameters are the same as an eager construction's."""
    return GoogLeNet(num_classes, input_shape, layout, aux_spec, batchnorm=batchnorm, kernel5=kernel5,
                     dropout=dropout, rngs=rngs)


@register("googlenet", (224, 224, 3), 1000, "the paper's GoogLeNet (Table 1): no BatchNorm, LRN stem, 5x5 convs, "
          "aux heads after 4a and 4d (train mode only)", loss=googlenet_loss)
def googlenet(num_classes: int = 1000, input_shape=(224, 224, 3), *, rngs: nnx.Rngs) -> GoogLeNet:
    return _construct(rngs, num_classes, tuple(input_shape), PAPER_LAYOUT, PAPER_AUX)


@register("googlenet_torchvision", (224, 224, 3), 1000, "torchvision's googlenet: BatchNorm, no LRN, 3x3 kernels "
          "in the '5x5' branch (6,624,904 params without aux heads)", loss=googlenet_loss)
def googlenet_torchvision(num_classes: int = 1000, input_shape=(224, 224, 3), *, rngs: nnx.Rngs) -> GoogLeNet:
    return _construct(rngs, num_classes, tuple(input_shape), TORCHVISION_LAYOUT, PAPER_AUX, batchnorm=True,
                      kernel5=3, dropout=0.2)


@register("googlenet_mini", (16, 16, 1), 10, "Table 1's nine Inception rows at 1/8 width for 16x16 inputs, "
          "aux heads after 4a and 4d (notebook 03)", loss=googlenet_loss)
def googlenet_mini(num_classes: int = 10, input_shape=(16, 16, 1), *, rngs: nnx.Rngs) -> GoogLeNet:
    return _construct(rngs, num_classes, tuple(input_shape), MINI_LAYOUT, MINI_AUX)
