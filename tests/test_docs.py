"""The repository's copy of the public interface stays equal to the contract, and the
configuration page names every setting."""

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


def test_every_setting_is_in_the_configuration_page() -> None:
    from resolvers.services.settings import Settings

    page = (REPO / "docs" / "configuration.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in page]
    assert not missing, f"settings docs/configuration.md does not name: {missing}"
