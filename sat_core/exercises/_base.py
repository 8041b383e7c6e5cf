"""The exercise-check framework: run a reader's function, compare with the reference, explain.

A chapter module ``sat_core/exercises/chNN.py`` declares its checks in a few lines::

    from sat_core.exercises._base import Case, ExerciseCheck

    def _cases():
        g = torch.Generator().manual_seed(0)
        a, h = torch.randn(2, 5, 4, generator=g), torch.randn(2, 3, generator=g)
        return [Case((a, h), name="B=2, L=5, D=4")]

    check_soft_attention = ExerciseCheck(
        "soft attention (Eq. 4-5)", reference=_soft_attention, cases=_cases,
        output_names=("z_hat", "alpha"),
    )

and the notebook calls ``check_soft_attention(my_soft_attention)``. The check runs the reference
and the reader's function on fresh copies of every case's inputs and either prints one line
starting with ✓ or raises :class:`ExerciseFailed` whose message says what is wrong: the wrong type,
shape or dtype, where the values differ and by how much, an input modified in place, a result cut
off from autograd, plus hints for the usual slips (a transpose, a softmax over the wrong dimension,
a constant factor such as a forgotten 1/L).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

Hint = Callable[[Any, Any, "Case"], "str | None"]


class ExerciseFailed(AssertionError):
    """The reader's answer is not right yet; the message explains what differs and hints why."""


class ExerciseNotAttempted(ExerciseFailed):
    """The reader's function still raises ``NotImplementedError`` (the student copy's stub)."""


class ExerciseCrashed(ExerciseFailed):
    """The reader's function raised an exception (kept as ``__cause__``) instead of answering."""


def not_attempted(name: str) -> ExerciseNotAttempted:
    """The error a check raises when the reader's function raises ``NotImplementedError``."""
    return ExerciseNotAttempted(
        f"{name}: not attempted yet. Replace `raise NotImplementedError` with your code, run the "
        "cell again."
    )


def crashed(label: str, err: BaseException) -> ExerciseCrashed:
    """The error a check raises (``from err``) when the reader's function raised ``err``."""
    return ExerciseCrashed(f"{label}: your function raised {type(err).__name__}: {err}")


@dataclass
class Case:
    """One prepared input: positional ``args``, keyword ``kwargs`` and a short description."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def fresh(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Deep copies of the inputs (tensors keep ``requires_grad`` and stay leaves)."""
        return _clone(self.args), _clone(self.kwargs)


def _clone(x: Any) -> Any:
    if isinstance(x, Tensor):
        y = x.detach().clone()
        return y.requires_grad_(x.requires_grad) if x.is_leaf else y
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # NamedTuple
        return type(x)(*(_clone(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, torch.Generator):
        g = torch.Generator(device=x.device)
        g.set_state(x.get_state())
        return g
    try:
        return copy.deepcopy(x)
    except Exception:  # modules with hooks, open files...: share them
        return x


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _shape(x: Tensor | np.ndarray) -> tuple[int, ...]:
    return tuple(x.shape)


# --------------------------------------------------------------------------- shape hints


def shape_hint(got: tuple[int, ...], expected: tuple[int, ...]) -> str | None:
    """A guess at why a result has shape ``got`` instead of ``expected``."""
    if got == expected:
        return None
    if len(got) == len(expected) and sorted(got) == sorted(expected):
        return "same sizes in a different order: a transpose/permute too many or too few?"
    if tuple(d for d in got if d != 1) == tuple(d for d in expected if d != 1):
        if len(got) > len(expected):
            return "an extra dimension of size 1: squeeze it (or drop keepdim=True)"
        return "a dimension of size 1 is missing: unsqueeze, or keepdim=True in the reduction"
    if len(got) == len(expected) - 1:
        for i in range(len(expected)):
            if expected[:i] + expected[i + 1 :] == got:
                return (
                    f"dimension {i} (size {expected[i]}) is missing: a sum/mean over the wrong "
                    "dimension?"
                )
    if len(got) == len(expected) + 1:
        for i in range(len(got)):
            if got[:i] + got[i + 1 :] == expected:
                return f"an extra dimension {i} (size {got[i]}): a reduction (sum) forgotten?"
    if math.prod(got) == math.prod(expected):
        return "the right number of elements in the wrong layout: a view/reshape in a wrong order?"
    return None


# --------------------------------------------------------------------------- value hints


def value_hints(got: Tensor, expected: Tensor, rtol: float, atol: float) -> list[str]:
    """Guesses at why floating-point values differ (same shape): the usual slips."""
    hints: list[str] = []
    g, e = got.double(), expected.double()
    close = lambda x, y: bool(torch.allclose(x, y, rtol=rtol, atol=atol))  # noqa: E731
    if e.ndim >= 2 and e.shape[-1] == e.shape[-2] and close(g, e.transpose(-1, -2)):
        hints.append("your result is the transpose of the expected one (last two dimensions)")
    if close(g, -e):
        hints.append("your result has the opposite sign")
    denom = (e * e).sum()
    if denom > 0 and not close(g, e):
        c = float((g * e).sum() / denom)  # least-squares factor
        if abs(c) > 1e-12 and min(abs(c - 1), abs(c + 1)) > 1e-3 and close(g, c * e):
            hints.append(
                f"your result is the expected one times {c:.4g}: a missing or extra "
                "normalisation (a 1/L, a mean instead of a sum, a scale)?"
            )
    if e.numel() > 1:
        shift = float((g - e).mean())
        if abs(shift) > atol and close(g - shift, e):
            hints.append(f"your result is the expected one plus a constant {shift:.4g}")
    for d in range(e.ndim):
        if e.shape[d] > 1 and close(e.sum(d), torch.ones_like(e.sum(d))):
            if not close(g.sum(d), torch.ones_like(g.sum(d))):
                other = [
                    k
                    for k in range(g.ndim)
                    if k != d and g.shape[k] > 1 and close(g.sum(k), torch.ones_like(g.sum(k)))
                ]
                where = f"; yours sum to 1 over dimension {other[0]}" if other else ""
                hints.append(
                    f"the expected values sum to 1 over dimension {d} (a softmax over dim={d})"
                    + where
                )
            break
    return hints


# --------------------------------------------------------------------------- comparison


def compare(
    got: Any,
    expected: Any,
    *,
    name: str = "output",
    rtol: float = 1e-5,
    atol: float = 1e-6,
    check_dtype: bool = True,
) -> None:
    """Raise :class:`ExerciseFailed` unless ``got`` matches ``expected``; ``name`` labels it.

    Tensors (and NumPy arrays) must have the expected type, shape and dtype, be finite where the
    expected values are, and be ``allclose``; a result that should carry gradients must. Tuples,
    lists, dicts and dataclasses are compared element by element; numbers with ``isclose``;
    anything else with ``==``.
    """
    tol = {"rtol": rtol, "atol": atol, "check_dtype": check_dtype}
    if isinstance(expected, Tensor):
        _compare_tensor(got, expected, name, rtol, atol, check_dtype)
    elif isinstance(expected, np.ndarray):
        _compare_array(got, expected, name, rtol, atol, check_dtype)
    elif dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        _compare_dataclass(got, expected, name, tol)
    elif isinstance(expected, Mapping):
        _compare_mapping(got, expected, name, tol)
    elif isinstance(expected, (tuple, list)):
        _compare_sequence(got, expected, name, tol)
    elif isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if got != expected:
            raise ExerciseFailed(f"{name} should be {expected!r}, got {got!r}")
    elif isinstance(expected, (int, float)):
        _compare_number(got, expected, name, rtol, atol)
    elif got != expected:
        raise ExerciseFailed(f"{name} should be {expected!r}, got {got!r}")


def _compare_array(
    got: Any, expected: np.ndarray, name: str, rtol: float, atol: float, check_dtype: bool
) -> None:
    """A NumPy array: of that type, then compared as the tensors it holds."""
    if not isinstance(got, np.ndarray):
        raise ExerciseFailed(f"{name} should be a NumPy array, got {type(got).__name__}")
    _compare_tensor(
        torch.from_numpy(np.asarray(got)),
        torch.from_numpy(expected),
        name,
        rtol,
        atol,
        check_dtype,
    )


def _compare_dataclass(got: Any, expected: Any, name: str, tol: dict[str, Any]) -> None:
    """A dataclass instance: of the very same class, then field by field (``name.field``)."""
    if type(got) is not type(expected):
        raise ExerciseFailed(
            f"{name} should be a {type(expected).__name__}, got {type(got).__name__}"
        )
    for f in dataclasses.fields(expected):
        compare(getattr(got, f.name), getattr(expected, f.name), name=f"{name}.{f.name}", **tol)


def _compare_mapping(got: Any, expected: Mapping, name: str, tol: dict[str, Any]) -> None:
    """A dict: the same keys (the missing and unexpected ones named), then value by value."""
    if not isinstance(got, Mapping):
        raise ExerciseFailed(f"{name} should be a dict, got {type(got).__name__}")
    if set(got) != set(expected):
        missing, extra = set(expected) - set(got), set(got) - set(expected)
        raise ExerciseFailed(
            f"{name} has the wrong keys: missing {sorted(map(str, missing))}, "
            f"unexpected {sorted(map(str, extra))}"
        )
    for k in expected:
        compare(got[k], expected[k], name=f"{name}[{k!r}]", **tol)


def _compare_sequence(got: Any, expected: tuple | list, name: str, tol: dict[str, Any]) -> None:
    """A tuple or list: as many values, compared in order (a named tuple's by field name)."""
    if not isinstance(got, (tuple, list)):
        raise ExerciseFailed(
            f"{name} should be a {type(expected).__name__} of {len(expected)} values, "
            f"got a {type(got).__name__}"
        )
    if len(got) != len(expected):
        raise ExerciseFailed(
            f"{name} should have {len(expected)} values, got {len(got)}"
            + (" (return them all, in order)" if len(got) < len(expected) else "")
        )
    fields = getattr(expected, "_fields", None)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        label = f"{name}.{fields[i]}" if fields else f"{name}[{i}]"
        compare(g, e, name=label, **tol)


def _compare_number(got: Any, expected: int | float, name: str, rtol: float, atol: float) -> None:
    """A number (a one-element tensor counts): ints exactly, floats with ``math.isclose``."""
    if isinstance(got, Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        raise ExerciseFailed(f"{name} should be a number, got {type(got).__name__}")
    if isinstance(expected, int) and isinstance(got, int):
        ok = got == expected
    else:
        ok = math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
    if not ok:
        raise ExerciseFailed(f"{name} should be {_fmt(expected)}, got {_fmt(got)}")


def _compare_tensor(
    got: Any, expected: Tensor, name: str, rtol: float, atol: float, check_dtype: bool
) -> None:
    if not isinstance(got, Tensor):
        hint = ""
        if isinstance(got, np.ndarray):
            hint = " (keep working with torch tensors: no .numpy(), or torch.from_numpy it back)"
        elif isinstance(got, (int, float)):
            hint = " (a .item() too many?)"
        raise ExerciseFailed(f"{name} should be a torch.Tensor, got {type(got).__name__}{hint}")
    if _shape(got) != _shape(expected):
        hint = shape_hint(_shape(got), _shape(expected))
        raise ExerciseFailed(
            f"{name} has the wrong shape: expected {_shape(expected)}, got {_shape(got)}"
            + (f"\n  hint: {hint}" if hint else "")
        )
    if check_dtype and got.dtype != expected.dtype:
        hint = ""
        if expected.dtype == torch.long:
            hint = " (indices are torch.long: .long(), or argmax/multinomial keep it)"
        elif expected.is_floating_point() and got.is_floating_point():
            hint = f" (.to({expected.dtype}); NumPy arrays and Python lists default to float64)"
        elif expected.dtype == torch.bool:
            hint = " (a comparison such as x > 0 gives a bool tensor)"
        raise ExerciseFailed(f"{name} has dtype {got.dtype}, expected {expected.dtype}{hint}")
    if expected.requires_grad and not got.requires_grad:
        raise ExerciseFailed(
            f"{name} is cut off from autograd: gradients cannot flow back through it. "
            "Avoid .detach(), .item(), .numpy(), torch.tensor(existing_tensor) and in-place "
            "writes into a tensor made with torch.zeros"
        )
    g = got.detach().cpu()
    e = expected.detach().cpu()
    if not (e.is_floating_point() or e.is_complex()):
        bad = g != e.to(g.dtype)
        if bool(bad.any()):
            raise ExerciseFailed(_where_message(name, g, e, bad, "differ"))
        return
    g, e = g.to(torch.float64), e.to(torch.float64)
    nonfinite = ~torch.isfinite(g) & torch.isfinite(e)
    if bool(nonfinite.any()):
        raise ExerciseFailed(
            _where_message(name, g, e, nonfinite, "are NaN or infinite")
            + "\n  hint: a log of 0, a division by 0, or an exp that overflowed "
            "(subtract the max before exp, or use torch.softmax / log_softmax)"
        )
    bad = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if bool(bad.any()):
        msg = _where_message(name, g, e, bad, "are wrong")
        for hint in value_hints(g, e, rtol, atol):
            msg += f"\n  hint: {hint}"
        raise ExerciseFailed(msg)


def _where_message(name: str, g: Tensor, e: Tensor, bad: Tensor, what: str) -> str:
    n_bad, n = int(bad.sum()), bad.numel()
    idx = tuple(int(i) for i in bad.nonzero()[0]) if bad.ndim else ()
    at = f" at index {list(idx)}" if idx else ""
    msg = (
        f"{name}: {n_bad} of {n} values {what}; e.g.{at} expected {_fmt(float(e[idx]))}, "
        f"got {_fmt(float(g[idx]))}"
    )
    if e.is_floating_point() and n_bad:
        diff = (g - e).abs()
        diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
        msg += f" (largest difference {_fmt(float(diff.max()))})"
    return msg


# --------------------------------------------------------------------------- the check


def _modified(before: Any, after: Any) -> bool:
    if isinstance(before, Tensor):
        after = after.detach()
        if before.shape != after.shape or before.dtype != after.dtype:
            return True
        if before.is_floating_point():
            return not torch.equal(before.isnan(), after.isnan()) or not torch.equal(
                before.nan_to_num(), after.nan_to_num()
            )
        return not torch.equal(before, after)
    if isinstance(before, (list, tuple)):
        return any(_modified(b, a) for b, a in zip(before, after, strict=False))
    if isinstance(before, dict):
        return any(_modified(before[k], after[k]) for k in before if k in after)
    return False


@dataclass
class ExerciseCheck:
    """A named check: ``check(fn)`` runs ``fn`` and ``reference`` on every case and compares.

    Args:
        name: what the exercise computes, with its equation, e.g. "soft attention (Eq. 4-5)".
        reference: the book's implementation, called with the same inputs.
        cases: the prepared inputs, or a function returning them (built lazily, e.g. seeded).
        rtol, atol: tolerances of the value comparison (``torch.isclose``).
        check_dtype: require the reference's dtype.
        output_names: names of the values of a tuple result, e.g. ``("z_hat", "alpha")``.
        hints: extra ``hint(got, expected, case) -> str | None`` functions, asked on failure.
    """

    name: str
    reference: Callable[..., Any]
    cases: Sequence[Case] | Callable[[], Sequence[Case]]
    rtol: float = 1e-5
    atol: float = 1e-6
    check_dtype: bool = True
    output_names: Sequence[str] | None = None
    hints: Sequence[Hint] = ()

    def get_cases(self) -> list[Case]:
        cases = self.cases() if callable(self.cases) else self.cases
        out = [c if isinstance(c, Case) else Case(tuple(c)) for c in cases]
        if not out:
            raise ValueError(f"exercise {self.name!r} has no test cases")
        return out

    def __call__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise ExerciseFailed(
                f"{self.name}: pass your function itself (check(my_fn)), not {type(fn).__name__}"
            )
        cases = self.get_cases()
        for i, case in enumerate(cases):
            label = f"{self.name}, test input {i + 1} of {len(cases)}"
            if case.name:
                label += f" ({case.name})"
            args, kwargs = case.fresh()
            expected = self.reference(*args, **kwargs)
            args, kwargs = case.fresh()
            before = _clone((args, kwargs))
            try:
                got = fn(*args, **kwargs)
            except NotImplementedError:
                raise not_attempted(self.name) from None
            except Exception as err:
                raise crashed(label, err) from err
            if _modified(before, (args, kwargs)):
                raise ExerciseFailed(
                    f"{label}: your function modified its input in place (an operation ending "
                    "in _ such as add_, or an assignment into an input); work on a copy"
                )
            try:
                self._compare(got, expected)
            except ExerciseFailed as err:
                extra = [h(got, expected, case) for h in self.hints]
                msg = "\n".join([f"{label}:", f"  {err}"] + [f"  hint: {h}" for h in extra if h])
                raise ExerciseFailed(msg) from None
        print(f"✓ {self.name}: correct on all {len(cases)} test inputs")

    def _compare(self, got: Any, expected: Any) -> None:
        names = self.output_names
        if names and isinstance(expected, (tuple, list)) and len(names) == len(expected):
            if not isinstance(got, (tuple, list)) or len(got) != len(expected):
                got_desc = f"{len(got)} values" if isinstance(got, (tuple, list)) else "one value"
                raise ExerciseFailed(
                    f"return {len(names)} values ({', '.join(names)}), got {got_desc}"
                )
            for g, e, n in zip(got, expected, names, strict=True):
                compare(g, e, name=n, rtol=self.rtol, atol=self.atol, check_dtype=self.check_dtype)
        else:
            compare(
                got,
                expected,
                name="your result",
                rtol=self.rtol,
                atol=self.atol,
                check_dtype=self.check_dtype,
            )


def check(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case] | Callable[[], Sequence[Case]],
    *,
    name: str = "exercise",
    rtol: float = 1e-5,
    atol: float = 1e-6,
    check_dtype: bool = True,
    output_names: Sequence[str] | None = None,
) -> None:
    """One-off form of :class:`ExerciseCheck`: ``check(my_fn, reference, cases, name=...)``."""
    ExerciseCheck(
        name,
        reference,
        cases,
        rtol=rtol,
        atol=atol,
        check_dtype=check_dtype,
        output_names=output_names,
    )(fn)
