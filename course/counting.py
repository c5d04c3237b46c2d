"""Parameters and multiply-accumulates, layer by layer, for any NNX model and an example input.

Conventions (stated once, used everywhere in the course):

* **MACs** (multiply-accumulates) are what papers call "FLOPs" or "ops": the ResNet paper (He et al., 2015,
  Sec. 3.3) says "FLOPs (multiply-adds)", GoogLeNet's Table 1 "ops", and torchvision's documented "GFLOPS" are
  GMACs too (ResNet-50: 4.09). A conv layer costs H_out * W_out * C_out * (k_h * k_w * C_in / groups) MACs; a
  linear layer in * out per position. Bias adds, BatchNorm, activations and pooling count 0 MACs, as in papers.
* **FLOPs** = 2 x MACs (one multiply plus one add).
* **XLA FLOPs** are what XLA's cost analysis reports (and so ``nnx.tabulate(compute_flops=True)``): 2 per MAC,
  plus one per bias add, but kernel taps that fall in the zero padding are not counted. So a padded 3x3 conv
  reports *less* than 2 x MACs. :func:`xla_flops_formula` derives that number exactly, and :func:`xla_measured`
  asks XLA itself, so the two conventions reconcile row by row.

Counts are per example (batch 1). Only the layers the forward pass actually calls get a row, so a head that is
skipped at inference (GoogLeNet's auxiliary classifiers) costs nothing in ``mode="eval"``; its parameters still
appear in ``params_total``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from course import paths
from course.models.layers import PointwiseConv

CONV_KINDS = (nnx.Conv, PointwiseConv)
COUNTED_KINDS = (nnx.Conv, PointwiseConv, nnx.Linear, nnx.BatchNorm, nnx.LayerNorm)


@dataclasses.dataclass(frozen=True)
class LayerCount:
    """One called layer. Shapes exclude the batch axis; ``padding`` is (low, high) per spatial axis."""

    path: str
    kind: str
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[tuple[int, int], ...] | None
    groups: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int
    xla_flops: int | None  # XLA's convention, derived by formula; None for layers without MACs

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["flops"] = self.flops
        return d


# ----------------------------------------------------------------------------------------------------------
# Formulas
def resolve_padding(padding, in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                    dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Explicit (low, high) padding per spatial axis for any of nnx.Conv's padding forms."""
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        return tuple(jax.lax.padtype_to_pads(in_spatial, eff, strides, padding))
    if isinstance(padding, int):
        return tuple((padding, padding) for _ in in_spatial)
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def conv_out_size(n: int, k: int, s: int, pad: tuple[int, int], d: int = 1) -> int:
    """Output length of a convolution along one axis: floor((n + pad_lo + pad_hi - d*(k-1) - 1) / s) + 1."""
    return (n + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


def valid_taps(n: int, k: int, s: int, pad: tuple[int, int], d: int = 1) -> int:
    """How many (output position, kernel tap) pairs along one axis read a real input pixel, not padding."""
    out = conv_out_size(n, k, s, pad, d)
    o = np.arange(out)[:, None]
    i = o * s - pad[0] + np.arange(k)[None, :] * d  # input index read by each tap
    return int(((i >= 0) & (i < n)).sum())


def conv_macs(out_spatial: Sequence[int], cout: int, kernel: Sequence[int], cin: int, groups: int = 1) -> int:
    """H_out * W_out * C_out * k_h * k_w * C_in / groups."""
    return int(np.prod(out_spatial)) * cout * int(np.prod(kernel)) * (cin // groups)


def xla_flops_formula(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                      padding: Sequence[tuple[int, int]], cin: int, cout: int, groups: int = 1,
                      bias: bool = True, dilation: Sequence[int] | None = None) -> int:
    """XLA's FLOP count for a convolution: 2 per MAC whose tap reads a real pixel, plus one add per bias."""
    dilation = dilation or [1] * len(kernel)
    taps = np.prod([valid_taps(n, k, s, p, d) for n, k, s, p, d in zip(in_spatial, kernel, strides, padding, dilation)])
    out = np.prod([conv_out_size(n, k, s, p, d) for n, k, s, p, d in zip(in_spatial, kernel, strides, padding, dilation)])
    return int(2 * taps * (cin // groups) * cout + (out * cout if bias else 0))


# ----------------------------------------------------------------------------------------------------------
# Recording the layers a forward pass calls
_state = threading.local()


@contextlib.contextmanager
def _record_calls(records: list) -> Iterator[None]:
    """Temporarily wrap ``__call__`` of the counted layer classes to log (module, input, output).

    Only the outermost counted call is logged, so a subclass that calls ``super().__call__`` counts once.
    (The same technique ``nnx.tabulate`` uses.)
    """
    originals = {cls: cls.__dict__["__call__"] for cls in COUNTED_KINDS}

    def wrap(orig):
        def __call__(self, x, *args, **kwargs):
            if getattr(_state, "inside", False):
                return orig(self, x, *args, **kwargs)
            _state.inside = True
            try:
                y = orig(self, x, *args, **kwargs)
            finally:
                _state.inside = False
            records.append((self, tuple(x.shape), tuple(y.shape), x.dtype))
            return y
        return __call__

    for cls, orig in originals.items():
        cls.__call__ = wrap(orig)
    try:
        yield
    finally:
        for cls, orig in originals.items():
            cls.__call__ = orig


def _own_params(module: nnx.Module) -> int:
    """Parameters held directly by ``module`` (not by its children)."""
    return sum(int(np.prod(v.shape)) for v in vars(module).values() if isinstance(v, nnx.Param))


def _row(path: str, m: nnx.Module, xs: tuple, ys: tuple) -> LayerCount:
    params = _own_params(m)
    in_shape, out_shape = xs[1:], ys[1:]
    if isinstance(m, CONV_KINDS):
        kernel = tuple(m.kernel_size)
        nd = len(kernel)
        strides = m.strides if isinstance(m.strides, Sequence) else (m.strides,) * nd
        strides = tuple(int(s) for s in (strides or (1,) * nd))
        dil = getattr(m, "kernel_dilation", 1) or 1
        dil = tuple(dil) if isinstance(dil, Sequence) else (dil,) * nd
        groups = int(m.feature_group_count)
        pads = resolve_padding(m.padding, in_shape[:-1], kernel, strides, dil)
        cin, cout = in_shape[-1], out_shape[-1]
        macs = conv_macs(out_shape[:-1], cout, kernel, cin, groups)
        xla = xla_flops_formula(in_shape[:-1], kernel, strides, pads, cin, cout, groups, m.bias is not None, dil)
        kind = f"Conv{kernel[0]}x{kernel[1]}" if nd == 2 else "Conv"
        return LayerCount(path, kind, kernel, strides, pads, groups, in_shape, out_shape, params, macs, xla)
    if isinstance(m, nnx.Linear):
        positions = int(np.prod(in_shape[:-1])) if len(in_shape) > 1 else 1
        macs = positions * m.in_features * m.out_features
        xla = 2 * macs + (positions * m.out_features if m.bias is not None else 0)
        return LayerCount(path, "Linear", None, None, None, 1, in_shape, out_shape, params, macs, xla)
    return LayerCount(path, type(m).__name__, None, None, None, 1, in_shape, out_shape, params, 0, None)


def layer_rows(model: nnx.Module, input_shape: Sequence[int], mode: str = "eval",
               dtype=jnp.float32) -> list[LayerCount]:
    """Trace ``model`` on one abstract example of ``input_shape`` (H, W, C) and return a row per called layer.

    Nothing is computed: the forward pass runs under ``nnx.eval_shape``, so even ResNet-152 at 224x224 is
    counted in a second. ``mode`` is "eval" (inference path) or "train" (e.g. with auxiliary heads).
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', not {mode!r}")
    records: list = []
    rows: list[LayerCount] = []

    def forward(m, x):
        getattr(m, mode)()
        names = {id(mod): paths.name(path) for path, mod in nnx.iter_modules(m)}
        with _record_calls(records):
            m(x)
        for mod, xs, ys, _ in records:
            rows.append(_row(names.get(id(mod), "?"), mod, xs, ys))

    nnx.eval_shape(forward, model, jax.ShapeDtypeStruct((1, *input_shape), dtype))
    return rows


def param_count(model: nnx.Module) -> int:
    """All trainable parameters (``nnx.Param``) of ``model``; BatchNorm statistics are not parameters."""
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CountTable:
    """Per-layer counts with totals; prints as text, renders as HTML in a notebook, exports JSON."""

    name: str
    input_shape: tuple[int, ...]
    rows: list[LayerCount]
    params_total: int
    mode: str = "eval"

    @property
    def params(self) -> int:
        """Parameters of the layers this forward pass uses."""
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def xla_flops(self) -> int:
        return sum(r.xla_flops or 0 for r in self.rows)

    def totals(self) -> dict[str, int]:
        return {"params": self.params, "params_total": self.params_total, "macs": self.macs,
                "flops": self.flops, "xla_flops": self.xla_flops}

    def group(self, depth: int = 1) -> list[dict[str, Any]]:
        """Rows summed by the first ``depth`` components of their path (e.g. one line per Inception module)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            key = "/".join(r.path.split("/")[:depth])
            g = out.setdefault(key, {"path": key, "params": 0, "macs": 0, "out_shape": r.out_shape})
            g["params"] += r.params
            g["macs"] += r.macs
            g["out_shape"] = r.out_shape
        return list(out.values())

    def to_json(self) -> str:
        return json.dumps({"model": self.name, "input_shape": list(self.input_shape), "mode": self.mode,
                           "rows": [r.as_dict() for r in self.rows], "totals": self.totals()}, indent=1)

    _COLUMNS = ("path", "layer", "kernel/stride", "input", "output", "params", "MACs", "FLOPs", "XLA FLOPs")

    def _cells(self, r: LayerCount) -> list[str]:
        ks = f"{'x'.join(map(str, r.kernel))}/{r.stride[0]}" if r.kernel else ""
        if r.groups > 1:
            ks += f" g{r.groups}"
        shp = lambda s: "x".join(map(str, s))  # noqa: E731
        return [r.path, r.kind, ks, shp(r.in_shape), shp(r.out_shape), f"{r.params:,}", f"{r.macs:,}",
                f"{r.flops:,}", "" if r.xla_flops is None else f"{r.xla_flops:,}"]

    def _total_cells(self) -> list[str]:
        return ["total", "", "", "x".join(map(str, self.input_shape)), "", f"{self.params:,}", f"{self.macs:,}",
                f"{self.flops:,}", f"{self.xla_flops:,}"]

    def _footer(self) -> str:
        unused = self.params_total - self.params
        s = f"{self.name} ({self.mode} mode, per example): {self.params_total:,} parameters, {self.macs:,} MACs"
        if unused:
            s += f"; {unused:,} parameters belong to layers this forward pass does not call"
        return s

    def __str__(self) -> str:
        body = [self._cells(r) for r in self.rows] + [self._total_cells()]
        widths = [max(len(c), *(len(row[i]) for row in body)) for i, c in enumerate(self._COLUMNS)]
        right = {5, 6, 7, 8}
        fmt = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        lines = [fmt(self._COLUMNS), "  ".join("-" * w for w in widths)]
        lines += [fmt(c) for c in body[:-1]] + ["  ".join("-" * w for w in widths), fmt(body[-1]), self._footer()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        th = "".join(f"<th>{c}</th>" for c in self._COLUMNS)
        td = lambda cells, tag="td": "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"  # noqa: E731
        body = "".join(td(self._cells(r)) for r in self.rows)
        return (f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody>"
                f"<tfoot>{td(self._total_cells(), 'th')}</tfoot></table><p>{self._footer()}</p>")


def count(model: nnx.Module, input_shape: Sequence[int], name: str | None = None, mode: str = "eval") -> CountTable:
    """The per-layer table of ``model`` on one example of ``input_shape`` (H, W, C)."""
    rows = layer_rows(model, input_shape, mode)
    return CountTable(name or type(model).__name__, tuple(input_shape), rows, param_count(model), mode)


# ----------------------------------------------------------------------------------------------------------
def xla_measured(module: nnx.Module, input_shape: Sequence[int], dtype=jnp.float32) -> int:
    """XLA's own FLOP count for ``module`` on one example, from the cost analysis of its lowered program
    (what ``nnx.tabulate(compute_flops=True)`` reports). Works on abstract modules too: nothing runs."""
    graphdef, state = nnx.split(module)
    f = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    cost = f.lower(state, jax.ShapeDtypeStruct((1, *input_shape), dtype)).cost_analysis()
    return int(cost["flops"])


def module_at(model: nnx.Module, path: str) -> nnx.Module:
    """The submodule of ``model`` at a row's ``path`` ("stage1/0/conv1")."""
    for p, m in nnx.iter_modules(model):
        if paths.name(p) == path:
            return m
    raise KeyError(f"no submodule at {path!r}")


def reconcile(model: nnx.Module, table: CountTable) -> list[dict[str, Any]]:
    """For each conv/linear row: MACs, 2 x MACs, our XLA formula, and XLA's own measurement of that layer."""
    out = []
    for r in table.rows:
        if r.xla_flops is None:
            continue
        measured = xla_measured(module_at(model, r.path), r.in_shape)
        out.append({"path": r.path, "macs": r.macs, "flops": r.flops, "xla_formula": r.xla_flops,
                    "xla_measured": measured, "padding_taps_flops": r.flops - (r.xla_flops - _bias_adds(r)),
                    "bias_adds": _bias_adds(r)})
    return out


def _bias_adds(r: LayerCount) -> int:
    """Bias adds of a conv/linear row (its output elements when it has a bias), from its parameter count."""
    cin = r.in_shape[-1] // r.groups
    weights = int(np.prod(r.kernel or (1,))) * cin * r.out_shape[-1]
    return int(np.prod(r.out_shape)) if r.params > weights else 0
