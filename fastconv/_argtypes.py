"""Argument types for the ``fastconv`` command and its sub-commands: each parses one option's text or makes
argparse print "must be ...; received ..."."""
import argparse
import math

__all__ = ["positive_int", "non_negative_int", "positive_float", "fraction", "unit_interval", "image_size"]


def _checked(convert, accept, requirement):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}; received {text!r}")
        return value

    parse.__name__ = requirement.replace(" ", "_")  # argparse names the type in some messages
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive int")
non_negative_int = _checked(int, lambda v: v >= 0, "a non-negative int")
positive_float = _checked(float, lambda v: 0 < v < math.inf, "a positive number")
fraction = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")
unit_interval = _checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def image_size(text):
    """``150`` or ``150x120`` (rows x cols)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"must be SIZE or ROWSxCOLS (positive ints); received {text!r}")
    return tuple(sizes)
