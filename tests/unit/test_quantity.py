from decimal import Decimal

import pytest

from tenantry.api.quantity import QuantityError, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("16Gi", Decimal(16 * 2**30)),
        ("100M", Decimal(100_000_000)),
        ("1e3", Decimal(1000)),
        ("1k", Decimal(1000)),
        (".5", Decimal("0.5")),
        (100, Decimal(100)),
    ],
)
def test_parses_kubernetes_quantities_exactly(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5 Gi", "10gb", "Gi", "1Gii", "--1"])
def test_rejects_malformed_quantities(text: str) -> None:
    with pytest.raises(QuantityError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_binary_and_decimal_suffixes_differ() -> None:
    assert parse_quantity("1Gi") > parse_quantity("1G")
