"""Hyperparameters of the wrong type are refused when the factory is called, naming the
argument (issue: ``opt.adam("0.001")`` used to be accepted and fail at the first update)."""

from __future__ import annotations

import numpy as np
import pytest
from optlab import optimizers as opt


@pytest.mark.parametrize("value", ["0.001", "abc", True, b"1", object()])
def test_a_learning_rate_that_is_not_a_number_is_refused_by_name(value):
    with pytest.raises(ValueError, match=r"^learning_rate=.* must be a number"):
        opt.adam(value)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad", "lion"])
def test_numbers_of_every_numeric_kind_are_accepted(name):
    for value in (1e-3, 1, np.float32(1e-3), np.array(1e-3)):
        opt.get(name, learning_rate=value)


def test_a_string_beta_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^b1='0.9' is invalid"):
        opt.adam(1e-3, b1="0.9")
