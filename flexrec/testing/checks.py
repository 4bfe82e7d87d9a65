"""Checks that fail with "expected X, found Y": the assertions of the contract suites.

The contract suites live in an installed package, whose ``assert`` statements pytest does not
rewrite: a bare ``assert out.shape == shape`` fails with an empty ``AssertionError``. Every check of
:mod:`flexrec.testing.contracts` goes through these functions instead, so a failing plug-in learns
what was expected and what its component returned. They raise ``AssertionError`` (pytest reports
it as a test failure) and hide themselves from pytest's traceback. Plug-in authors may use them in
their own tests too.

Examples:
    >>> expect_shape("rewards", torch.zeros(3, 4), (3, 4, 5))
    Traceback (most recent call last):
    ...
    AssertionError: rewards: expected shape (3, 4, 5), found (3, 4)
    >>> expect_finite("advantages", torch.tensor([[0.0, float("nan")]]))
    Traceback (most recent call last):
    ...
    AssertionError: advantages: expected finite values, found 1 non-finite of 2 (nan at (0, 1))
    >>> expect_in_range("gains", torch.tensor([0.5, 1.25]), 0.0, 1.0)
    Traceback (most recent call last):
    ...
    AssertionError: gains: expected values in [0.0, 1.0], found 1.25 at (1,)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "expect",
    "expect_close",
    "expect_equal",
    "expect_finite",
    "expect_in_range",
    "expect_shape",
]


def _fail(what: str, expected: str, found: str) -> None:
    __tracebackhide__ = True
    raise AssertionError(f"{what}: expected {expected}, found {found}")


def _tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, np.ndarray | np.generic):
        return torch.as_tensor(np.asarray(value))
    return None


def _where(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape)) if shape else ()


def _number(value: Tensor) -> str:
    item = value.item()
    return repr(item) if isinstance(item, bool) else f"{item:.6g}"


def expect(condition: Any, what: str, expected: str, found: Any) -> None:
    """Fail with ``"{what}: expected {expected}, found {found}"`` unless ``condition`` holds.

    ``condition`` may be a bool or a one-element tensor.

    Examples:
        >>> expect(len(("a", "b")) >= 3, "instructions", "at least 3 paraphrases", 2)
        Traceback (most recent call last):
        ...
        AssertionError: instructions: expected at least 3 paraphrases, found 2
    """
    __tracebackhide__ = True
    if not bool(condition):
        _fail(what, expected, str(found))


def expect_shape(what: str, value: Any, shape: tuple[int, ...] | torch.Size) -> None:
    """``value`` is a tensor (or array) of exactly ``shape``."""
    __tracebackhide__ = True
    tensor = _tensor(value)
    want = tuple(int(n) for n in shape)
    if tensor is None:
        _fail(what, f"a tensor of shape {want}", f"{type(value).__name__} {value!r:.80}")
    elif tuple(tensor.shape) != want:
        _fail(what, f"shape {want}", str(tuple(tensor.shape)))


def expect_finite(what: str, value: Any) -> None:
    """Every value of the tensor (or array) is finite: no NaN, no ±inf."""
    __tracebackhide__ = True
    tensor = _tensor(value)
    if tensor is None:
        _fail(what, "a tensor of finite values", f"{type(value).__name__} {value!r:.80}")
        return
    if not tensor.is_floating_point() and not tensor.is_complex():
        return
    bad = ~torch.isfinite(tensor)
    if bad.any():
        first = int(bad.flatten().nonzero()[0])
        value_there = _number(tensor.flatten()[first])
        where = _where(first, tuple(tensor.shape))
        _fail(
            what,
            "finite values",
            f"{int(bad.sum())} non-finite of {tensor.numel()} ({value_there} at {where})",
        )


def expect_in_range(
    what: str, value: Any, low: float, high: float, tolerance: float = 1e-6
) -> None:
    """Every value of the tensor (or array) is finite and in ``[low, high]`` (± ``tolerance``)."""
    __tracebackhide__ = True
    expect_finite(what, value)
    tensor = _tensor(value)
    assert tensor is not None
    flat = tensor.flatten().double()
    outside = (flat < low - tolerance) | (flat > high + tolerance)
    if outside.any():
        first = int(outside.nonzero()[0])
        where = _where(first, tuple(tensor.shape))
        _fail(what, f"values in [{low}, {high}]", f"{_number(flat[first])} at {where}")


def expect_equal(what: str, found: Any, expected: Any) -> None:
    """``found`` equals ``expected``: exactly, element by element, for tensors and arrays (same
    shape); with ``==`` otherwise."""
    __tracebackhide__ = True
    a, b = _tensor(found), _tensor(expected)
    if a is None or b is None:
        if found != expected:
            _fail(what, repr(expected), repr(found))
        return
    if a.shape != b.shape:
        _fail(what, f"shape {tuple(b.shape)}", str(tuple(a.shape)))
    differ = a != b
    if differ.any():
        first = int(differ.flatten().nonzero()[0])
        where = _where(first, tuple(a.shape))
        _fail(
            what,
            f"{_number(b.flatten()[first])} at {where}",
            f"{_number(a.flatten()[first])} ({int(differ.sum())} of {a.numel()} values differ)",
        )


def expect_close(
    what: str, found: Any, expected: Any, *, atol: float | None = None, rtol: float | None = None
) -> None:
    """``torch.testing.assert_close(found, expected)`` with ``what`` heading its message (which
    says how many values differ, by how much and where)."""
    __tracebackhide__ = True
    try:
        torch.testing.assert_close(found, expected, atol=atol, rtol=rtol)
    except AssertionError as exc:
        detail = " ".join(str(exc).split())
        raise AssertionError(
            f"{what}: expected values close to the reference, found: {detail}"
        ) from None
