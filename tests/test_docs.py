"""The repository's copy of the public interface stays equal to the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO.parent / "shared" / "docs" / "API.md"


def test_docs_api_is_the_contract() -> None:
    if not CONTRACT.exists():
        pytest.skip("no shared/docs/API.md beside this checkout to compare with")
    assert (REPO / "docs" / "api.md").read_text() == CONTRACT.read_text(), (
        "docs/api.md differs from the contract: copy shared/docs/API.md over it"
    )
