"""Figures of notebook 04: a residual block drawn with its computed numbers, and the shape of a tensor through
a ResNet (He et al., 2015, Fig. 5 and Table 1).

Every function takes data (a :class:`~course.counting.CountTable`, a shape trace) and returns a matplotlib
Figure; nothing is typed in: the kernel, stride, padding, output shape, weights and MACs written on the
figure are the ones the counter measured on the model.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch

from course.counting import CountTable, LayerCount

_CONV_COLOURS = {1: "#cfe3f7", 3: "#fde2c4", 7: "#e3d4f2"}  # 1x1 blue, 3x3 orange, 7x7 purple


def _shape(s: Sequence[int]) -> str:
    return "x".join(map(str, s))


def _mega(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n:,}"


def conv_label(r: LayerCount) -> tuple[str, str]:
    """Two lines describing a conv row: what it is, and what it makes and costs."""
    (kh, kw), s, p = r.kernel, r.stride[0], r.padding[0][0]
    head = f"{kh}x{kw} conv, {r.out_shape[-1]}    stride {s}, pad {p}"
    body = f"-> {_shape(r.out_shape)}    {r.params:,} weights    {_mega(r.macs)} MACs"
    return head, body


def _box(ax, x: float, y: float, w: float, h: float, lines: Sequence[str], colour: str, bold_first=True) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.015",
                                fc=colour, ec="#444444", lw=1))
    n = len(lines)
    for i, line in enumerate(lines):
        ax.text(x, y + (n - 1) * 0.0135 - i * 0.027, line, ha="center", va="center", fontsize=9,
                fontweight="bold" if (i == 0 and bold_first) else "normal")


def _arrow(ax, x0: float, y0: float, x1: float, y1: float, text: str = "", **kw) -> None:
    ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.2, **kw))
    if text:
        ax.text((x0 + x1) / 2 + 0.015, (y0 + y1) / 2, text, fontsize=9, va="center", color="#555555")


def plot_block(table: CountTable, title: str = "", figsize: tuple[float, float] = (8, 7.5)) -> Figure:
    """A residual block (a :class:`CountTable` of one ``BasicBlock`` or ``BottleneckBlock``) drawn as in the
    paper's Fig. 5: its convolutions top to bottom, each with kernel, filters, stride, padding, output shape,
    weights and MACs; BatchNorm/ReLU between them; the shortcut on the right (identity, or the projection
    with its own numbers); the sum and the final ReLU; totals underneath."""
    main = [r for r in table.rows if not r.path.startswith("shortcut") and r.kernel is not None]
    proj = [r for r in table.rows if r.path.startswith("shortcut") and r.kernel is not None]
    bn_params = sum(r.params for r in table.rows if r.kind == "BatchNorm")
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    xm, xs, bw = 0.33, 0.83, 0.58
    step = 0.68 / (len(main) + 0.8)
    y = 0.94
    _box(ax, xm, y, 0.34, 0.05, [f"input  {_shape(table.input_shape)}"], "#eeeeee")
    y_in = y
    for i, r in enumerate(main):
        y_next = y - step
        _arrow(ax, xm, y - 0.03, xm, y_next + 0.035,
               "" if i == 0 else ("BN, ReLU" if i < len(main) else ""))
        y = y_next
        _box(ax, xm, y, bw, 0.065, conv_label(r), _CONV_COLOURS.get(r.kernel[0], "#dddddd"))
    y_sum = y - step * 0.7
    _arrow(ax, xm, y - 0.035, xm, y_sum + 0.025, "BN")
    ax.add_patch(Circle((xm, y_sum), 0.022, fc="white", ec="#444444", lw=1.2))
    ax.text(xm, y_sum, "+", ha="center", va="center", fontsize=13)
    # the shortcut: from the input, down the right side, into the sum
    # (with a projection the line stops at the box's edge and resumes below it, never crossing its text)
    ax.plot([xm + 0.17, xs], [y_in, y_in], color="#444444", lw=1.2)
    if proj:
        r = proj[0]
        yp, half = (y_in + y_sum) / 2, 0.085  # half the box's height, its rounded padding included
        head, body = conv_label(r)
        _box(ax, xs, yp, 0.31, 0.15, ["projection (W_s)", head.split("    ")[0] + ", " + head.split("    ")[1],
                                      body.split("    ")[0], "    ".join(body.split("    ")[1:]), "+ BN"],
             "#d8f0d8")
        ax.plot([xs, xs], [y_in, yp + half], color="#444444", lw=1.2)
        ax.plot([xs, xs], [yp - half, y_sum], color="#444444", lw=1.2)
    else:
        ax.plot([xs, xs], [y_in, y_sum], color="#444444", lw=1.2)
        ax.text(xs + 0.01, (y_in + y_sum) / 2, "identity\n(no weights)", fontsize=9, va="center", ha="left")
    _arrow(ax, xs, y_sum, xm + 0.024, y_sum)
    y_out = y_sum - 0.1
    _arrow(ax, xm, y_sum - 0.024, xm, y_out + 0.025, "ReLU")
    out_shape = main[-1].out_shape
    _box(ax, xm, y_out, 0.34, 0.05, [f"output  {_shape(out_shape)}"], "#eeeeee")
    weights = sum(r.params for r in main + proj)
    ax.text(0.5, y_out - 0.08, f"block: {weights:,} conv weights + {bn_params:,} BatchNorm parameters = "
            f"{table.params_total:,} parameters;  {table.macs:,} MACs", ha="center", fontsize=9)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_shape_trace(trace: Mapping[str, Sequence[int]], title: str = "",
                     figsize: tuple[float, float] = (10, 3.2)) -> Figure:
    """One rectangle per step of a network (``{"input": (224, 224, 3), "conv1": (112, 112, 64), ...}``):
    its height is the map's side H (to scale), its width grows with the number of channels (log scale), and
    it is labelled H x W x C. Shows where the maps shrink and where the channels grow."""
    names = list(trace)
    fig, ax = plt.subplots(figsize=figsize)
    side = max(s[0] for s in trace.values() if len(s) == 3)
    x = 0.0
    for name in names:
        s = tuple(trace[name])
        h = s[0] / side if len(s) == 3 else 0.02
        c = s[-1]
        w = 0.25 + 0.12 * np.log2(c)
        ax.add_patch(FancyBboxPatch((x, 0.5 - h / 2), w, h, boxstyle="square,pad=0", fc="#cfe3f7", ec="#335577"))
        ax.text(x + w / 2, 0.5 + max(h, 0.1) / 2 + 0.04, _shape(s), ha="center", va="bottom", fontsize=9)
        ax.text(x + w / 2, 0.5 - max(h, 0.1) / 2 - 0.05, name, ha="center", va="top", fontsize=9,
                fontweight="bold")
        x += w + 0.35
    ax.set_xlim(-0.2, x)
    ax.set_ylim(-0.15, 1.2)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
