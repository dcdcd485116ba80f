"""Kubernetes resource quantities ("500m", "16Gi", "1e3"), parsed exactly.

Quotas are compared (override vs. policy default, desired vs. live), so we need the numeric
value; `Decimal` keeps "0.1" exact where a float would not.
"""

from __future__ import annotations

import decimal
import math
import re
from decimal import Decimal

# The grammar of resource.Quantity, as the CRD schema of core ResourceList spells it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_SPLIT_RE = re.compile(r"^([+-]?[0-9.]+)(.*)$")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


# Enough digits for any quantity of at most 64 characters, exactly; exponents far past any real
# value overflow (an error, not an exception that escapes).
_CONTEXT = decimal.Context(
    prec=200, Emax=10_000, Emin=-10_000, traps=[decimal.InvalidOperation, decimal.Overflow]
)


def parse_quantity(value: str | int | float) -> Decimal:
    """Return the exact value of a Kubernetes quantity; raise `QuantityError` if malformed.

    As Kubernetes parses it: no surrounding whitespace (`" 4"` is not a quantity), no NaN or
    infinity.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, float) and not math.isfinite(value):
        raise QuantityError(f"{value!r} is not a quantity (no infinity or NaN)")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not _QUANTITY_RE.match(value):
        shown = repr(value if len(value) <= 80 else value[:80] + "...")
        raise QuantityError(f"{shown} is not a Kubernetes quantity (examples: 500m, 2, 1.5, 16Gi, 100M)")
    match = _SPLIT_RE.match(value)
    assert match is not None  # the full grammar matched above, so the split does too
    number, suffix = match.groups()
    try:
        base = _CONTEXT.create_decimal(number)
        if suffix in _BINARY:
            return _CONTEXT.multiply(base, _BINARY[suffix])
        if suffix in _DECIMAL:
            return _CONTEXT.multiply(base, _DECIMAL[suffix])
        return _CONTEXT.scaleb(base, int(suffix[1:]))  # e/E exponent form
    except (ArithmeticError, ValueError) as exc:
        raise QuantityError(f"{value!r} is too large or too small to be a quantity") from exc


def quantity_str(value: str | int | float) -> str:
    """Normalise YAML scalars (`pods: 100`) to the string form Kubernetes stores."""
    return value if isinstance(value, str) else str(value)
