"""Chapter 3 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import pytest
import torch

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch03 import (
    RF_STACKS,
    check_flatten_annotations,
    check_receptive_field,
    flatten_annotations,
    random_stacks,
    receptive_field_of,
)


def failure(check, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    return str(info.value)


# --------------------------------------------------------------------------- receptive field


def rf_loop(layers):
    """A correct answer: start -= p * J; size += (k - 1) * J; J *= s."""
    size, jump, start = 1, 1, 0
    for k, s, p in layers:
        start -= p * jump
        size += (k - 1) * jump
        jump *= s
    return size, jump, start


def test_reference_agrees_with_hand_computed_values():
    by_hand = {
        "one 3x3 conv": (3, 1, -1),
        # sizes 1 + 2 + 2*1 + 2*2 + 2*4 = 17; paddings at jumps 1, 1, 2, 4: start -8
        "3x3 convs with padding 1, strides 1, 2, 2, 2": (17, 8, -8),
        # 1 + 6 + 2*2 = 11, stride 4, start -(3 + 1*2) = -5
        "7x7 stride 2 then a 3x3 stride 2 pool (a ResNet stem)": (11, 4, -5),
        # 1 + 2 + 2 + 1 + 2*2 = 10, stride 2, start -(1 + 1 + 0 + 2) = -4
        "VGG-like: conv, conv, 2x2 pool, conv": (10, 2, -4),
        "5x5 conv without padding, 1x1 conv": (5, 1, 0),
    }
    for name, stack in RF_STACKS:
        assert receptive_field_of(stack) == by_hand[name], name
    answers = {tuple(map(tuple, stack)): by_hand[name] for name, stack in RF_STACKS}
    # the hand values pass where they exist (the boundaries and random stacks: the loop)
    check_receptive_field(lambda layers: answers.get(tuple(map(tuple, layers)), rf_loop(layers)))


def test_brute_force_receptive_field_of_a_real_stack_matches():
    """Which input pixels does output cell 1 depend on? Ask autograd, compare with the reference."""
    torch.manual_seed(0)
    layers = [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 1, 1)]
    stack = torch.nn.Sequential(*(torch.nn.Conv2d(1, 1, k, s, p) for k, s, p in layers))
    x = torch.randn(1, 1, 3, 40, requires_grad=True)  # 3 rows so that the 3x3 kernels fit
    out = stack(x)
    out[0, 0, 0, 1].backward()
    cols = (x.grad[0, 0].abs().sum(0) > 0).nonzero().flatten().tolist()
    size, stride, start = receptive_field_of(layers)
    window = [c for c in range(start + stride, start + stride + size) if 0 <= c < 40]
    assert cols == window


def test_correct_loop_passes(capsys):
    check_receptive_field(rf_loop)
    check_receptive_field(lambda layers: list(rf_loop(layers)))  # a list is fine too
    assert capsys.readouterr().out.count("✓ the receptive field of a conv stack") == 2


def test_forgetting_the_jump():
    def no_jump(layers):
        size, jump, start = 1, 1, 0
        for k, s, p in layers:
            start -= p * jump
            size += k - 1
            jump *= s
        return size, jump, start

    msg = failure(check_receptive_field, no_jump)
    assert "expected (size, stride, start) = (17, 8, -8), got (9, 8, -8)" in msg
    assert "times the product of the strides BEFORE it" in msg


def test_updating_the_stride_too_early():
    def late(layers):
        size, jump, start = 1, 1, 0
        for k, s, p in layers:
            start -= p * jump
            jump *= s
            size += (k - 1) * jump
        return size, jump, start

    msg = failure(check_receptive_field, late)
    assert "got (31, 8, -8)" in msg and "then multiply the stride" in msg


def test_ignoring_padding():
    msg = failure(check_receptive_field, lambda layers: rf_loop(layers)[:2] + (0,))
    assert "test input 1 of 13 (one 3x3 conv)" in msg
    assert "padding shifts the window" in msg


def test_wrong_arity():
    msg = failure(check_receptive_field, lambda layers: rf_loop(layers)[0])
    assert "should be a tuple of 3 values, got a int" in msg
    assert "return three integers" in msg


# --------------------------------------------------------------------------- flattening


def test_flatten_reference_by_hand():
    # a (1, 2, 2, 3) map whose value encodes (channel, row, col) as 100 c + 10 r + col
    fmap = torch.tensor([[[[100 * c + 10 * r + k for k in range(3)] for r in range(2)]
                          for c in range(2)]], dtype=torch.float32)
    a = flatten_annotations(fmap)
    assert a.shape == (1, 6, 2)
    # location i = row * 3 + col holds (row, col) in both channels
    expected = [[10 * (i // 3) + i % 3, 100 + 10 * (i // 3) + i % 3] for i in range(6)]
    assert a[0].tolist() == expected


def test_flatten_correct_answers_pass(capsys):
    check_flatten_annotations(lambda f: f.flatten(2).transpose(1, 2))
    check_flatten_annotations(lambda f: f.permute(0, 2, 3, 1).reshape(f.shape[0], -1, f.shape[1]))
    assert capsys.readouterr().out.count("✓ annotation vectors") == 2


def test_flatten_plain_reshape_is_explained():
    msg = failure(check_flatten_annotations, lambda f: f.reshape(f.shape[0], -1, f.shape[1]))
    assert "values are wrong" in msg and "mixes channels and positions" in msg


def test_flatten_column_major_is_explained():
    msg = failure(check_flatten_annotations, lambda f: f.transpose(2, 3).flatten(2).transpose(1, 2))
    assert "column-major order" in msg


def test_flatten_missing_transpose_and_detach():
    msg = failure(check_flatten_annotations, lambda f: f.flatten(2))
    assert "wrong shape: expected (2, 12, 5), got (2, 5, 12)" in msg
    assert "transpose" in msg
    msg = failure(check_flatten_annotations, lambda f: f.detach().flatten(2).transpose(1, 2))
    assert "cut off from autograd" in msg
    assert "column-major" not in msg


# --------------------------------------------------------------------------- wrong answers


def rf_variant(update_first: bool = False, jump_in_size: bool = True, padding: bool = True,
               stride_sum: bool = False):
    """The receptive-field loop with one slip switched on."""
    def answer(layers):
        size, jump, start = 1, 1, 0
        for k, s, p in layers:
            start -= p * jump if padding else 0
            if update_first:
                jump = jump + s - 1 if stride_sum else jump * s
            size += (k - 1) * (jump if jump_in_size else 1)
            if not update_first:
                jump = jump + s - 1 if stride_sum else jump * s
        return size, jump, start
    return answer


def test_random_stacks_are_seeded_and_reach_the_edges():
    stacks = random_stacks(6, seed=3)
    assert stacks == random_stacks(6, seed=3)
    layers = [layer for stack in stacks for layer in stack]
    assert {s for _, s, _ in layers} == {1, 2, 3}
    assert receptive_field_of([(1, 1, 0)]) == (1, 1, 0)


WRONG_ANSWERS = [
    pytest.param(check_receptive_field, rf_variant(jump_in_size=False),
                 "times the product of the strides BEFORE it", id="rf: no jump"),
    pytest.param(check_receptive_field, rf_variant(update_first=True),
                 "then multiply the stride", id="rf: stride updated first"),
    pytest.param(check_receptive_field, rf_variant(padding=False),
                 "padding shifts the window", id="rf: padding ignored"),
    pytest.param(check_receptive_field, rf_variant(stride_sum=True),
                 "the product of all the layers' strides", id="rf: strides added"),
    pytest.param(check_flatten_annotations, lambda f: f.reshape(f.shape[0], -1, f.shape[1]),
                 "mixes channels and positions", id="flatten: plain reshape"),
    pytest.param(check_flatten_annotations,
                 lambda f: f.transpose(2, 3).flatten(2).transpose(1, 2),
                 "column-major order", id="flatten: column-major"),
    pytest.param(check_flatten_annotations, lambda f: f.flatten(2),
                 "a transpose/permute too many or too few", id="flatten: no transpose"),
    pytest.param(check_flatten_annotations, lambda f: f.detach().flatten(2).transpose(1, 2),
                 "cut off from autograd", id="flatten: detached"),
]


@pytest.mark.parametrize("check, answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(check, answer, hint):
    assert hint in failure(check, answer)
