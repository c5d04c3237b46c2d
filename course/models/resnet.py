"""ResNet: residual networks with basic and bottleneck blocks, in Flax NNX (notebook 04).

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385).
The layout follows flax's ``examples/imagenet/models.py`` (a block class and the stage sizes as data) and
big_vision's ``bit.py`` (depth as a plain dict; ``intermediates`` returns named activations).

* :class:`BasicBlock`: two 3x3 convolutions (paper Fig. 5 left; ResNet-18/34 and the CIFAR nets).
* :class:`BottleneckBlock`: 1x1 (reduce) - 3x3 - 1x1 (restore, ``expansion`` = 4) (Fig. 5 right;
  ResNet-50/101/152). Where a stage downsamples, the paper's v1 puts the stride in the first 1x1
  (``stride_in_1x1=True``); torchvision's "v1.5" puts it in the 3x3 (the default here), which costs more
  MACs (the first 1x1 then runs at the higher resolution) for the same parameters, and is a little more
  accurate (NVIDIA's DeepLearningExamples report about 0.5 % top-1).
* Shortcuts (Sec. 3.3): ``"projection"`` = identity, or a 1x1 conv + BN where the shape changes (option B,
  what Table 1's networks and torchvision use); ``"zeropad"`` = identity, or subsampling with extra channels
  filled by zeros (option A, parameter-free, the CIFAR networks of Sec. 4.2); ``"none"`` = a plain network.
* :class:`ResNet`: the ImageNet networks of Table 1 (7x7/2 conv, 3x3/2 max pool, conv2_x...conv5_x, average
  pool, 1000-d fc) on 224x224 inputs, or with ``stem="cifar"`` the 6n+2-layer networks of Sec. 4.2 (3x3 conv,
  three stages of 16/32/64 channels, average pool, fc).

Conventions that make the parameter counts equal torchvision's exactly: convolutions have no bias (BatchNorm
follows every one of them and has its own shift), BatchNorm has a scale and a shift (its running mean and
variance are statistics, not parameters), the fc layer has a bias. Paddings are explicit (k // 2 on each side,
as in the paper's Caffe models and torchvision), not "SAME", which would pad 7x7/2 as (2, 3) instead of (3, 3).

1x1 convolutions are :class:`~course.models.layers.PointwiseConv` (a matrix product over the channel axis),
the course's convention for 1x1 layers that may train on a CPU: the same layer with the same parameters and
count, whose backward pass XLA runs much faster than ``lax.conv``'s where 1x1 layers dominate
(../shared/GUIDE.md). In a stack of small bottleneck blocks, where the 3x3 dominates, the two measured alike.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from course.models.layers import PointwiseConv

#: Blocks per stage, conv2_x ... conv5_x (paper Table 1).
STAGE_SIZES: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                                           101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
#: Table 1's row names; the CIFAR networks use the first three for their three stages.
STAGE_NAMES = ("conv2_x", "conv3_x", "conv4_x", "conv5_x")
SHORTCUTS = ("projection", "zeropad", "none")

# He et al. initialise "as in [13]" (He et al., 2015, "Delving deep into rectifiers"): N(0, 2/n); torchvision
# takes n = fan_out. Either way the signal variance is kept through a ReLU network.
he_normal = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")  # untruncated, as torchvision


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
    """3x3 convolution, padding 1 on each side (a 56x56 map stays 56x56, or becomes 28x28 with stride 2)."""
    return nnx.Conv(in_ch, out_ch, (3, 3), strides=stride, padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=he_normal, rngs=rngs)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, *, rngs: nnx.Rngs) -> PointwiseConv:
    """1x1 convolution, no padding: a fully connected layer over the channels at every (strided) pixel."""
    return PointwiseConv(in_ch, out_ch, strides=stride, use_bias=False, kernel_init=he_normal, rngs=rngs)


class BatchNorm(nnx.BatchNorm):
    """BatchNorm after every convolution (Sec. 3.4) with torchvision's settings: eps 1e-5, running averages
    updated by 0.1 of the batch statistics (flax's momentum 0.9). ``model.eval()`` switches every one of them to
    the running averages; ``model.train()`` back to the batch statistics.

    Its scale (ones) and shift (zeros) are made without drawing random keys: nothing random goes into them, and
    each key drawn while building a model abstractly (``build(..., abstract=True)``) costs time that grows with
    the model, which made building ResNet-152 twice as slow.
    """

    def __init__(self, num_features: int, *, rngs: nnx.Rngs):
        super().__init__(num_features, momentum=0.9, epsilon=1e-5, use_scale=False, use_bias=False, rngs=rngs)
        self.use_scale = self.use_bias = True
        self.scale = nnx.Param(jnp.ones((num_features,)))  # gamma
        self.bias = nnx.Param(jnp.zeros((num_features,)))  # beta


# ----------------------------------------------------------------------------------------------------------
# Shortcuts
class Projection(nnx.Module):
    """Option B where the shape changes: a strided 1x1 conv (W_s in Eq. 2) and BatchNorm."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = conv1x1(in_ch, out_ch, stride, rngs=rngs)
        self.bn = BatchNorm(out_ch, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))  # (B, H/s, W/s, out_ch)


class ZeroPadShortcut(nnx.Module):
    """Option A where the shape changes: keep every ``stride``-th pixel and append zero channels (no parameters)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        self.stride, self.extra = stride, out_ch - in_ch

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x[:, ::self.stride, ::self.stride, :]  # (B, H/s, W/s, in_ch)
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.extra)))  # (B, H/s, W/s, out_ch)


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs) -> nnx.Module | None:
    """The module on a block's shortcut path. ``None`` means the identity (``"projection"``/``"zeropad"`` when the
    shape is kept) or no shortcut at all (``"none"``; the block's ``residual`` attribute tells which)."""
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, not {kind!r}")
    if kind == "none" or (stride == 1 and in_ch == out_ch):
        return None
    if kind == "zeropad":
        return ZeroPadShortcut(in_ch, out_ch, stride)
    return Projection(in_ch, out_ch, stride, rngs=rngs)


class ShortcutGate(nnx.Variable):
    """One number that multiplies every shortcut of a network: 1 = the ResNet, 0 = the plain network with the
    very same weights. A variable, not a parameter: it is not trained and not counted; because it is data, not
    structure, both settings run the same compiled program (one compile for two experiments)."""


class _Residual(nnx.Module):
    """What both blocks share: ``relu(F(x) + shortcut(x))``, or ``relu(F(x))`` in a plain network."""

    expansion = 1

    def _init_shortcut(self, kind: str, in_ch: int, out_ch: int, stride: int, gate: ShortcutGate | None,
                       rngs: nnx.Rngs) -> None:
        self.residual = kind != "none"
        self.shortcut = make_shortcut(kind, in_ch, out_ch, stride, rngs=rngs)
        self.gate = gate if self.residual else None

    def residual_branch(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.residual_branch(x)  # F(x): (B, H/s, W/s, out_ch)
        if self.residual:
            s = x if self.shortcut is None else self.shortcut(x)  # x, or W_s x where the shape changes
            y = y + (s if self.gate is None else self.gate[...] * s)  # Eq. (1) / Eq. (2)
        return nnx.relu(y)


class BasicBlock(_Residual):
    """Two 3x3 convolutions with ``channels`` filters (Fig. 5 left). The first carries the stride.

    On 56x56x64: 3x3,64 -> 3x3,64, each 3*3*64*64 = 36,864 weights and 56*56*36,864 MACs.
    """

    expansion = 1

    def __init__(self, in_ch: int, channels: int, stride: int = 1, shortcut: str = "projection",
                 stride_in_1x1: bool = False, *, gate: ShortcutGate | None = None, rngs: nnx.Rngs):
        del stride_in_1x1  # accepted so both blocks build alike; a basic block has one place for its stride
        out_ch = channels * self.expansion
        self.conv1 = conv3x3(in_ch, channels, stride, rngs=rngs)
        self.bn1 = BatchNorm(channels, rngs=rngs)
        self.conv2 = conv3x3(channels, out_ch, rngs=rngs)
        self.bn2 = BatchNorm(out_ch, rngs=rngs)
        self._init_shortcut(shortcut, in_ch, out_ch, stride, gate, rngs)

    def residual_branch(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))  # (B, H/s, W/s, channels)
        return self.bn2(self.conv2(y))  # (B, H/s, W/s, channels)


class BottleneckBlock(_Residual):
    """1x1 reduce to ``channels`` - 3x3 with ``channels`` - 1x1 restore to 4 x ``channels`` (Fig. 5 right).

    The "256-d" of Fig. 5 is the number of channels of the block's input and output (one 56x56 feature map
    with 256 channels, in conv2_x); "64" is the width of the 1x1/3x3/... layers inside, ``channels``.
    ``stride_in_1x1``: where a downsampling block puts its stride: True = the paper's v1 (first 1x1),
    False = torchvision's v1.5 (the 3x3).
    """

    expansion = 4

    def __init__(self, in_ch: int, channels: int, stride: int = 1, shortcut: str = "projection",
                 stride_in_1x1: bool = False, *, gate: ShortcutGate | None = None, rngs: nnx.Rngs):
        out_ch = channels * self.expansion
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_ch, channels, s1, rngs=rngs)
        self.bn1 = BatchNorm(channels, rngs=rngs)
        self.conv2 = conv3x3(channels, channels, s2, rngs=rngs)
        self.bn2 = BatchNorm(channels, rngs=rngs)
        self.conv3 = conv1x1(channels, out_ch, rngs=rngs)
        self.bn3 = BatchNorm(out_ch, rngs=rngs)
        self._init_shortcut(shortcut, in_ch, out_ch, stride, gate, rngs)

    def residual_branch(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))  # (B, H/s1, W/s1, channels): reduce
        y = nnx.relu(self.bn2(self.conv2(y)))  # (B, H/s, W/s, channels)
        return self.bn3(self.conv3(y))  # (B, H/s, W/s, 4 * channels): restore


# ----------------------------------------------------------------------------------------------------------
class ResNet(nnx.Module):
    """A stem, stages of blocks (the first block of every stage but the first halves the map), global average
    pooling and a fully connected classifier.

    ``stem="imagenet"`` (Table 1): conv1 = 7x7, 64, stride 2, padding 3 (224 -> 112), then 3x3 max pool,
    stride 2, padding 1 (112 -> 56), so conv2_x works on 56x56 maps, conv3_x 28x28, conv4_x 14x14, conv5_x 7x7.
    ``stem="cifar"`` (Sec. 4.2): conv1 = 3x3, ``widths[0]``, stride 1; no pooling.

    ``input_shape`` (H, W, C) is what the model accepts; a different input raises an error that says so.
    ``gated=True`` adds a :class:`ShortcutGate` shared by every block (see :func:`set_shortcuts`).
    """

    def __init__(self, stage_sizes: Sequence[int], block_cls: type = BottleneckBlock, num_classes: int = 1000, *,
                 input_shape: Sequence[int] = (224, 224, 3), widths: Sequence[int] = (64, 128, 256, 512),
                 stem: str = "imagenet", shortcut: str = "projection", stride_in_1x1: bool = False,
                 gated: bool = False, name: str = "ResNet", rngs: nnx.Rngs):
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', not {stem!r}")
        if len(stage_sizes) != len(widths) or len(widths) > len(STAGE_NAMES):
            raise ValueError(f"need one width per stage (at most {len(STAGE_NAMES)}): "
                             f"stage_sizes={tuple(stage_sizes)}, widths={tuple(widths)}")
        self.name, self.stem, self.input_shape = name, stem, tuple(int(s) for s in input_shape)
        self.stage_names = STAGE_NAMES[:len(stage_sizes)]
        h, w, in_ch = self.input_shape
        factor = (4 if stem == "imagenet" else 1) * 2 ** (len(stage_sizes) - 1)  # total downsampling
        if h % factor or w % factor:
            raise ValueError(f"{name} halves its input {factor.bit_length() - 1} times "
                             f"({h}x{w} -> {h / factor:g}x{w / factor:g}); give it an input whose height and "
                             f"width are multiples of {factor}, e.g. {'224x224' if stem == 'imagenet' else '32x32'}")
        stem_width = 64 if stem == "imagenet" else widths[0]
        if stem == "imagenet":
            self.conv1 = nnx.Conv(in_ch, stem_width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                                  kernel_init=he_normal, rngs=rngs)
        else:
            self.conv1 = conv3x3(in_ch, stem_width, rngs=rngs)
        self.bn1 = BatchNorm(stem_width, rngs=rngs)
        self.shortcut_gate = ShortcutGate(jnp.ones(())) if gated and shortcut != "none" else None
        ch = stem_width
        for i, (stage, n_blocks, width) in enumerate(zip(self.stage_names, stage_sizes, widths)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(ch, width, stride, shortcut, stride_in_1x1=stride_in_1x1,
                                        gate=self.shortcut_gate, rngs=rngs))
                ch = width * block_cls.expansion
            setattr(self, stage, nnx.List(blocks))
        self.fc = nnx.Linear(ch, num_classes, rngs=rngs)

    def check_input(self, x: jax.Array) -> None:
        """Raise a ValueError naming the problem and the fix if ``x`` is not (B, *input_shape)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            want = "x".join(map(str, self.input_shape))
            got = "x".join(map(str, x.shape[1:] if x.ndim == 4 else x.shape))
            hint = "add a batch axis: x[None]" if x.ndim == 3 else (
                f"resize/crop the images to {want}, or build the model for yours: "
                f"build(name, input_shape=(H, W, C)) with H and W multiples of 32" if self.stem == "imagenet" else
                f"build the model for your images: build(name, input_shape=(H, W, C))")
            raise ValueError(f"{self.name} expects inputs of shape (batch, {', '.join(map(str, self.input_shape))})"
                             f" = batches of {want} images, got {tuple(x.shape)} ({got}); {hint}")

    def intermediates(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(logits, out): ``out`` holds the output of every Table 1 row, in order (for shape traces and plots)."""
        self.check_input(x)
        out = {}
        x = out["conv1"] = nnx.relu(self.bn1(self.conv1(x)))  # (B, H/2, W/2, 64) or (B, H, W, 16)
        if self.stem == "imagenet":
            x = out["max_pool"] = nnx.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))  # (B, H/4, W/4, 64)
        for stage in self.stage_names:
            for block in getattr(self, stage):
                x = block(x)
            out[stage] = x  # (B, H/4/2^i, W/4/2^i, width * expansion)  # (B, H/4/2^i, W/4/2^i, width * expansion)
        x = out["avg_pool"] = x.mean(axis=(1, 2))  # (B, C)
        out["fc"] = self.fc(x)  # (B, num_classes)
        return out["fc"], out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.intermediates(x)[0]


def imagenet_resnet(depth: int, num_classes: int = 1000, input_shape: Sequence[int] = (224, 224, 3), *,
                    v1: bool = False, rngs: nnx.Rngs) -> ResNet:
    """ResNet-``depth`` of Table 1; ``v1=True`` puts a downsampling bottleneck's stride in its first 1x1."""
    if depth not in STAGE_SIZES:
        raise ValueError(f"Table 1 defines ResNet-{'/'.join(map(str, STAGE_SIZES))}, not ResNet-{depth}")
    block = BasicBlock if depth < 50 else BottleneckBlock
    name = f"ResNet-{depth}" + (" v1" if v1 and block is BottleneckBlock else "")
    return ResNet(STAGE_SIZES[depth], block, num_classes, input_shape=input_shape, stride_in_1x1=v1, name=name,
                  rngs=rngs)


def cifar_resnet(depth: int, num_classes: int = 10, input_shape: Sequence[int] = (32, 32, 3), *,
                 shortcut: str = "zeropad", widths: Sequence[int] = (16, 32, 64), gated: bool = False,
                 rngs: nnx.Rngs) -> ResNet:
    """The 6n+2-layer networks of Sec. 4.2: conv 3x3,16, then 3 stages of n basic blocks (2n layers each) with
    16, 32, 64 filters on maps of H, H/2, H/4, average pool, fc. ``shortcut="none"`` gives the plain network;
    ``gated=True`` a ResNet whose shortcuts :func:`set_shortcuts` can switch off."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNets have 6n+2 layers (20, 32, 44, 56, 110, ...), not {depth}")
    n = (depth - 2) // 6
    kind = "ResNet" if shortcut != "none" else "plain"
    return ResNet((n, n, n), BasicBlock, num_classes, input_shape=input_shape, widths=widths, stem="cifar",
                  shortcut=shortcut, gated=gated, name=f"{kind}-{depth}", rngs=rngs)


def set_shortcuts(model: ResNet, on: bool) -> ResNet:
    """Switch every shortcut of a ``gated`` ResNet on (the ResNet) or off (its plain twin); returns the model.
    With the shortcuts off it computes exactly what the plain network (``shortcut="none"``) built from the same
    seed computes."""
    if model.shortcut_gate is None:
        raise ValueError(f"{model.name} has no shortcut gate; build it with gated=True")
    model.shortcut_gate.set_value(jnp.asarray(1.0 if on else 0.0))
    return model


# ----------------------------------------------------------------------------------------------------------
from course.models.registry import register  # noqa: E402

_TORCHVISION = "torchvision's layout (v1.5: a downsampling bottleneck strides in its 3x3)"
for _d in STAGE_SIZES:
    register(f"resnet{_d}", (224, 224, 3), 1000, f"ResNet-{_d} of Table 1 (He et al., 2015)"
             + (f", {_TORCHVISION}" if _d >= 50 else ""), bench_batch=8)(partial(imagenet_resnet, _d))
    if _d >= 50:
        register(f"resnet{_d}_v1", (224, 224, 3), 1000,
                 f"ResNet-{_d} as in the paper (v1: a downsampling bottleneck strides in its first 1x1)",
                 bench_batch=8)(partial(imagenet_resnet, _d, v1=True))

for _d in (20, 32, 44, 56, 110):
    register(f"resnet{_d}", (16, 16, 1), 10, f"CIFAR-style ResNet-{_d} (Sec. 4.2: 6n+2 layers, 16/32/64 "
             f"channels, option A shortcuts) on 16x16 digits")(partial(cifar_resnet, _d))
    if _d <= 56:
        register(f"plain{_d}", (16, 16, 1), 10, f"plain-{_d}: ResNet-{_d} without its shortcuts (Sec. 4.2) "
                 f"on 16x16 digits")(partial(cifar_resnet, _d, shortcut="none"))
