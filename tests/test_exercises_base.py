"""The exercise-check framework on a toy exercise: right answers pass, wrong ones are explained."""

from __future__ import annotations

import importlib
import sys
import textwrap
from typing import NamedTuple

import numpy as np
import pytest
import torch

import sat_core.exercises as exercises
from sat_core.exercises._base import (
    Case,
    ExerciseCheck,
    ExerciseFailed,
    check,
    compare,
    shape_hint,
)

# --------------------------------------------------------------------------- a toy exercise
# "Soft attention without the MLP": alpha = softmax over L of e (B, L); z = sum_i alpha_i a_i.


def reference(e: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = torch.softmax(e, dim=-1)
    return torch.einsum("bl,bld->bd", alpha, a), alpha


def loop_answer(e, a):
    """A correct answer written differently: explicit loops and exp / sum."""
    B, L = e.shape
    alpha = torch.zeros_like(e)
    z = torch.zeros(B, a.shape[2])
    for b in range(B):
        w = torch.exp(e[b] - e[b].max())
        alpha[b] = w / w.sum()
        for i in range(L):
            z[b] = z[b] + alpha[b, i] * a[b, i]
    return z, alpha


def cases():
    g = torch.Generator().manual_seed(0)
    return [
        Case((torch.randn(2, 3, generator=g), torch.randn(2, 3, 4, generator=g)), name="B=2, L=3"),
        Case((torch.randn(1, 5, generator=g), torch.randn(1, 5, 2, generator=g)), name="B=1, L=5"),
    ]


toy = ExerciseCheck("toy attention", reference, cases, output_names=("z_hat", "alpha"))


def failure(fn, chk=toy) -> str:
    with pytest.raises(ExerciseFailed) as info:
        chk(fn)
    return str(info.value)


# --------------------------------------------------------------------------- right answers


def test_correct_answers_print_a_tick(capsys):
    toy(loop_answer)
    toy(reference)
    out = capsys.readouterr().out.splitlines()
    assert out == ["✓ toy attention: correct on all 2 test inputs"] * 2


def test_tolerance_accepts_float_rounding_but_not_more():
    def nudged(eps):
        return lambda e, a: tuple(t + eps for t in reference(e, a))

    toy(nudged(1e-7))  # far below atol=1e-6 + rtol * |value|
    assert "values are wrong" in failure(nudged(1e-3))


def test_check_function_form_and_plain_tuples_of_cases(capsys):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, generator=g)
    check(lambda v: v * 2, lambda v: v + v, [(x,)], name="double")
    assert capsys.readouterr().out.strip() == "✓ double: correct on all 1 test inputs"
    assert "values are wrong" in failure(lambda v: v * 3, ExerciseCheck("triple", lambda v: v * 2, [(x,)]))


# --------------------------------------------------------------------------- wrong answers


def test_softmax_over_the_wrong_dimension_is_named():
    def wrong_dim(e, a):
        alpha = torch.softmax(e, dim=0)
        return torch.einsum("bl,bld->bd", alpha, a), alpha

    msg = failure(wrong_dim)
    assert "test input 1 of 2 (B=2, L=3)" in msg
    assert "z_hat" in msg  # the first output compared is already wrong
    # on the alpha output alone the hint says which dimension sums to 1 and which should
    msg = failure(lambda e, a: (reference(e, a)[0], wrong_dim(e, a)[1]))
    assert "alpha:" in msg
    assert "sum to 1 over dimension 1" in msg and "yours sum to 1 over dimension 0" in msg


def test_constant_factor_is_reported_with_its_value():
    msg = failure(lambda e, a: (reference(e, a)[0] / 3, reference(e, a)[1]))
    assert "z_hat" in msg and "times 0.3333" in msg


def test_sign_and_offset_hints():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    with pytest.raises(ExerciseFailed, match="opposite sign"):
        compare(-x, x)
    with pytest.raises(ExerciseFailed, match="plus a constant 0.5"):
        compare(x + 0.5, x)


def test_transpose_hint_on_square_results():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ExerciseFailed, match="transpose of the expected"):
        compare(x.T, x)


def test_wrong_values_message_gives_count_index_and_values():
    # hand-made: only the last of three values differs, by 0.5
    with pytest.raises(ExerciseFailed) as info:
        compare(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.5]), name="y")
    msg = str(info.value)
    assert "y: 1 of 3 values are wrong" in msg
    assert "at index [2] expected 3.5, got 3" in msg
    assert "largest difference 0.5" in msg


def test_wrong_shape_with_hints():
    msg = failure(lambda e, a: (reference(e, a)[0].unsqueeze(1), reference(e, a)[1]))
    assert "z_hat has the wrong shape: expected (2, 4), got (2, 1, 4)" in msg
    assert "squeeze" in msg
    assert shape_hint((4, 2), (2, 4)).startswith("same sizes in a different order")
    assert "dimension 1 (size 3) is missing" in shape_hint((2, 4), (2, 3, 4))
    assert "extra dimension 1 (size 3)" in shape_hint((2, 3, 4), (2, 4))
    assert "wrong layout" in shape_hint((3, 8), (2, 12))
    assert shape_hint((5,), (7,)) is None


def test_wrong_dtype_and_wrong_type():
    msg = failure(lambda e, a: tuple(t.double() for t in reference(e, a)))
    assert "z_hat has dtype torch.float64, expected torch.float32" in msg
    msg = failure(lambda e, a: tuple(t.numpy() for t in reference(e, a)))
    assert "should be a torch.Tensor, got ndarray" in msg
    with pytest.raises(ExerciseFailed, match="torch.long"):
        compare(torch.tensor([1.0]), torch.tensor([1]))


def test_wrong_number_of_outputs():
    assert "return 2 values (z_hat, alpha), got one value" in failure(lambda e, a: reference(e, a)[0])
    assert "got 3 values" in failure(lambda e, a: (*reference(e, a), 0))


def test_not_attempted_and_crashing_answers():
    def todo(e, a):
        raise NotImplementedError("Your code here")

    assert "not attempted yet" in failure(todo)

    def crash(e, a):
        return e.view(7), a  # (2, 3) has 6 values: torch raises a RuntimeError

    with pytest.raises(ExerciseFailed) as info:
        toy(crash)
    assert "your function raised RuntimeError" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "pass your function itself" in failure(42)


def test_in_place_modification_of_an_input_is_caught():
    def sneaky(e, a):
        e -= e.max(dim=-1, keepdim=True).values  # right result, but writes into the caller's e
        return reference(e, a)

    assert "modified its input in place" in failure(sneaky)


def test_result_cut_off_from_autograd():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    chk = ExerciseCheck("square", lambda v: v**2, [Case((x,))])
    chk(lambda v: v * v)  # fine, and the case's leaf stays untouched
    assert x.grad is None
    assert "cut off from autograd" in failure(lambda v: (v * v).detach(), chk)


def test_nan_is_reported_as_such():
    with pytest.raises(ExerciseFailed, match="NaN or infinite") as info:
        compare(torch.tensor([0.0, float("nan")]), torch.tensor([0.0, 1.0]))
    assert "log of 0" in str(info.value)


def test_integer_tensors_are_compared_exactly():
    compare(torch.tensor([3, 1]), torch.tensor([3, 1]))
    with pytest.raises(ExerciseFailed, match="1 of 2 values differ"):
        compare(torch.tensor([3, 2]), torch.tensor([3, 1]))


def test_containers_numbers_and_named_tuples():
    class Out(NamedTuple):
        logits: torch.Tensor
        steps: int

    compare({"a": 1.0, "b": [1, 2]}, {"a": 1.0 + 1e-9, "b": [1, 2]})
    with pytest.raises(ExerciseFailed, match=r"wrong keys: missing \['b'\]"):
        compare({"a": 1.0}, {"a": 1.0, "b": 2})
    with pytest.raises(ExerciseFailed, match=r"out\.steps should be 3, got 4"):
        compare(Out(torch.zeros(1), 4), Out(torch.zeros(1), 3), name="out")
    with pytest.raises(ExerciseFailed, match="should be 0.25, got 0.5"):
        compare(torch.tensor(0.5), 0.25)
    with pytest.raises(ExerciseFailed, match="should be a NumPy array"):
        compare([1.0], np.array([1.0]))
    compare(np.array([1.0, 2.0]), np.array([1.0, 2.0]))


def test_custom_hints_are_added_on_failure():
    chk = ExerciseCheck(
        "mean",
        lambda v: v.mean(),
        [(torch.tensor([1.0, 3.0]),)],
        hints=[lambda got, exp, case: "divide by the number of values" if got == 2 * exp else None],
    )
    msg = failure(lambda v: v.sum(), chk)
    assert "hint: divide by the number of values" in msg


# --------------------------------------------------------------------------- chapter lookup


def test_check_names_are_found_in_chapter_modules(tmp_path, monkeypatch):
    (tmp_path / "ch99.py").write_text(
        textwrap.dedent(
            """
            from sat_core.exercises._base import ExerciseCheck
            check_toy = ExerciseCheck("toy", lambda x: x + 1, [(1,)])
            """
        )
    )
    monkeypatch.setattr(exercises, "__path__", [*exercises.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "sat_core.exercises.ch99", raising=False)
    importlib.invalidate_caches()
    try:
        assert "ch99" in exercises.chapter_modules()
        from sat_core.exercises import check_toy

        check_toy(lambda x: x + 1)
        with pytest.raises(ExerciseFailed, match="should be 2, got 3"):
            check_toy(lambda x: x + 2)
        with pytest.raises(AttributeError, match="no exercise check named 'check_nothing'"):
            exercises.check_nothing  # noqa: B018
    finally:
        sys.modules.pop("sat_core.exercises.ch99", None)


def test_not_attempted_and_crashed_are_told_apart():
    """The grader's statuses: a stub is 'not attempted', an exception is 'error', else 'failed'."""
    from sat_core.exercises import ExerciseCrashed, ExerciseNotAttempted

    check = ExerciseCheck("double", reference=lambda x: 2 * x, cases=[Case((3,))])

    def stub(x):
        raise NotImplementedError("Your code here")

    with pytest.raises(ExerciseNotAttempted, match="not attempted yet"):
        check(stub)
    with pytest.raises(ExerciseCrashed, match="raised ZeroDivisionError") as info:
        check(lambda x: x / 0)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(ExerciseFailed) as info:
        check(lambda x: 3 * x)
    assert type(info.value) is ExerciseFailed
