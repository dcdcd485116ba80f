"""The offline model of the API server's admission validation (tests/unit/admission_validation.py)
agrees with a real API server, sample by sample.

Each sample of tests/unit/test_admission_validation.py goes to the server as a server-side dry
run (`kubectl apply --server-side --dry-run=server`, how we install them): it must be refused
exactly when the model reports errors, and the server must name every field path the model names.
Nothing is stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import apply, needs_cluster
from tests.unit.admission_validation import errors
from tests.unit.test_admission_validation import samples

pytestmark = needs_cluster

SAMPLES = samples()


@pytest.mark.parametrize(("case", "obj"), SAMPLES, ids=[c for c, _ in SAMPLES])
def test_the_model_and_the_api_server_agree(case: str, obj: dict[str, Any]) -> None:
    expected = errors(obj)
    proc = apply(obj, dry_run=True, check=False)
    if not expected:
        assert proc.returncode == 0, f"{case}: the model accepts it, the API server refused it: {proc.stderr}"
        return
    assert proc.returncode != 0, f"{case}: the model refuses it ({expected}), the API server accepted it"
    for error in expected:
        path = error.split(": ", 1)[0]
        assert path in proc.stderr, f"{case}: the model reports {error!r}; the API server said: {proc.stderr}"
