"""A pytest plugin on top of nbval: decimal numbers in cells that declare a tolerance compare within it.

nbval (strict, ``pytest --nbval``) compares every text output of a notebook exactly. That is right for what is
computed exactly (shapes, parameter counts, MACs, error messages) and wrong for what is *measured*: a training
run's accuracy changes in its third digit between CPUs and, by the whole seed-to-seed spread, between seeds. A code
cell opts in by declaring, in its metadata::

    "tolerance": {"abs": 0.03, "why": "3-seed spread of test accuracy, measured in this cell: at most 0.012"}

or, for numbers printed as ``mean ± spread``::

    "tolerance": {"spread": 2, "why": "means of 3 seeds; the spread is the one printed beside each"}

In such a cell, and only there:

* the outputs are split into text and numbers; the text between the numbers must still be equal (runs of spaces
  count as one space, so an aligned table whose column width changes still matches);
* an integer (``42``, ``1,797`` is two integers) must be equal, as everywhere;
* a decimal (``0.873``, ``87.3%``, ``4.8e-07``) ``a`` in the stored output and ``b`` in the fresh one may differ by
  ``max(abs, rel * max(|a|, |b|), spread * (s_a + s_b))``, where ``s_a`` and ``s_b`` are the spreads printed after
  a ``±`` beside that number (0 where there is none). A spread estimated from three runs is itself noisy, so the
  spread numbers are compared with the same allowance, which they always meet.

The tolerance must say ``why`` (where its size comes from): a tolerance is the spread the notebook measures, never a
number picked to make a test pass. Nothing in nbval is copied or changed: the plugin replaces, in a copy of the fresh
outputs, each text that agrees with the stored one within tolerance by the stored text, then nbval's own comparison
runs on the result, so its sanitizer and its failure report apply as usual. Cells without ``tolerance`` are
compared exactly, as before.

Loaded by the repository's ``conftest.py``; the unit tests are ``tests/test_nbval_tolerance.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import re

# A number not glued to a word ("resnet20", "3x3" stay text) or to another number ("0.10.2" is 0.10 and text),
# with its sign: "+0.003" and "-0.002" are two values of one signed difference, not a "+" of text.
NUMBER = re.compile(r"(?<![\w.])([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)(?![\w])")
SPREAD_SEP = re.compile(r"^\s*±\s*$")
TEXT_KEYS = ("text/plain", "text/html", "text/markdown", "text/latex")
KEYS = {"abs", "rel", "spread", "why"}


class ToleranceError(ValueError):
    """A cell's ``tolerance`` metadata is malformed."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far a decimal may move: ``max(abs, rel * magnitude, spread * (s_ref + s_new))``."""

    abs: float = 0.0
    rel: float = 0.0
    spread: float = 0.0
    why: str = ""

    @classmethod
    def from_metadata(cls, meta, where: str = "cell") -> "Tolerance | None":
        """The tolerance a cell's metadata declares, or None; a clear error for a malformed one."""
        if meta is None:
            return None
        if not isinstance(meta, dict):
            raise ToleranceError(f"{where}: metadata 'tolerance' must be a mapping like "
                                 f'{{"abs": 0.02, "why": "..."}}, not {meta!r}')
        unknown = set(meta) - KEYS
        if unknown:
            raise ToleranceError(f"{where}: unknown tolerance key(s) {sorted(unknown)}; use {sorted(KEYS)}")
        if not str(meta.get("why", "")).strip():
            raise ToleranceError(f"{where}: a tolerance must say 'why' (which measured spread it comes from)")
        values = {k: meta.get(k, 0.0) for k in ("abs", "rel", "spread")}
        for k, v in values.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ToleranceError(f"{where}: tolerance '{k}' must be a number >= 0, not {v!r}")
        if not any(values.values()):
            raise ToleranceError(f"{where}: a tolerance needs at least one of abs, rel or spread > 0")
        return cls(**{k: float(v) for k, v in values.items()}, why=str(meta["why"]))


def _is_decimal(token: str) -> bool:
    return "." in token or "e" in token.lower()


def _spreads(parts: list[str]) -> dict[int, float]:
    """For ``parts`` = [text, number, text, number, ...]: the spread printed after each ``mean ± spread`` pair,
    keyed by the index of both the mean and the spread."""
    out = {}
    for i in range(1, len(parts) - 2, 2):
        if SPREAD_SEP.match(parts[i + 1]) and _is_decimal(parts[i + 2]):
            out[i] = out[i + 2] = abs(float(parts[i + 2]))
    return out


def differences(ref: str, new: str, tol: Tolerance) -> list[str]:
    """Why ``new`` does not match ``ref`` under ``tol`` (an empty list when it does)."""
    a, b = NUMBER.split(ref), NUMBER.split(new)
    if len(a) != len(b):
        return [f"different number of numbers: {len(a) // 2} stored, {len(b) // 2} now"]
    sa, sb = _spreads(a), _spreads(b)
    problems = []
    for i, (x, y) in enumerate(zip(a, b)):
        if i % 2 == 0:  # text between numbers
            if re.sub(r"[ \t]+", " ", x) != re.sub(r"[ \t]+", " ", y):
                problems.append(f"text differs: {x.strip()[:60]!r} vs {y.strip()[:60]!r}")
        elif not (_is_decimal(x) and _is_decimal(y)):
            if x != y:
                problems.append(f"integer {x} stored, {y} now (integers compare exactly)")
        else:
            fx, fy = float(x), float(y)
            allowed = max(tol.abs, tol.rel * max(abs(fx), abs(fy)), tol.spread * (sa.get(i, 0.0) + sb.get(i, 0.0)))
            if abs(fx - fy) > allowed + 1e-12:
                problems.append(f"{x} stored, {y} now: differ by {abs(fx - fy):.3g} > tolerance {allowed:.3g}")
    return problems


def reconcile(test_outputs: list, ref_outputs: list, tol: Tolerance,
              sanitize=lambda s: s) -> tuple[list, list[str]]:
    """A copy of ``test_outputs`` in which every text that matches its stored counterpart within ``tol`` is
    replaced by the stored text; and the reasons for the texts that do not match. Outputs pair up in order
    (nbval has already merged the streams); a different number or kind of outputs is left for nbval to report.
    Texts are compared after ``sanitize`` (nbval's sanitizer: timings, addresses)."""
    test_outputs = copy.deepcopy(test_outputs)
    notes = []
    for new, ref in zip(test_outputs, ref_outputs):
        if new.get("output_type") != ref.get("output_type"):
            continue
        fields = []
        if new.get("output_type") == "stream" and new.get("name") == ref.get("name"):
            fields.append((new, ref, "text"))
        for key in TEXT_KEYS:
            if key in new.get("data", {}) and key in ref.get("data", {}):
                fields.append((new["data"], ref["data"], key))
        for n, r, key in fields:
            rs, ns = sanitize(_text(r[key])), sanitize(_text(n[key]))
            if rs == ns:
                continue
            why = differences(rs, ns, tol)
            if why:
                notes.extend(f"[{key}] {w}" for w in why)
            else:
                n[key] = r[key]
    return test_outputs, notes


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


# ----------------------------------------------------------------------------------------------------------
def pytest_collection_modifyitems(session, config, items):
    """Give every nbval cell that declares a tolerance a comparison that applies it before nbval's own."""
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to do
        return
    for item in items:
        if not isinstance(item, IPyNbCell):
            continue
        tol = Tolerance.from_metadata(item.cell.metadata.get("tolerance"),
                                      where=f"{item.path.name} cell {item.cell_num}")
        if tol is not None:
            item.compare_outputs = _tolerant_compare(item, tol)


def _tolerant_compare(item, tol: Tolerance):
    exact = item.compare_outputs  # nbval's bound method

    def compare_outputs(test, ref, skip_compare=None):
        reconciled, notes = reconcile(test, ref, tol, item.sanitize)
        ok = exact(reconciled, ref, skip_compare)
        if not ok and notes:
            item.comparison_traceback.append(f"outside the cell's tolerance ({tol}):")
            item.comparison_traceback.extend("  " + n for n in notes)
        return ok

    return compare_outputs
