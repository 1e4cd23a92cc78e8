"""The one reader of a number of seconds for the commands' flags."""

import argparse

import pytest

from cni_ipam.cliargs import seconds


@pytest.mark.parametrize("zero_allowed, most, text, value", [
    (True, None, "0", 0.0), (True, 3600, "3600", 3600.0), (False, None, "0.5", 0.5), (False, 3600, "2", 2.0)])
def test_accepted(zero_allowed, most, text, value):
    assert seconds(zero_allowed, most)(text) == value


@pytest.mark.parametrize("zero_allowed, most, text, message", [
    (True, None, "x", "'x' is not a number"),
    (True, None, "-1", "'-1' must not be negative"),
    (False, None, "0", "'0' must be more than 0"),
    (False, 3600, "3601", "'3601' must be at most 3600"),
])
def test_refused_with_the_value_named(zero_allowed, most, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        seconds(zero_allowed, most)(text)
