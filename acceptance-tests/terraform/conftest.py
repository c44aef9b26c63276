"""Fixtures for the Terraform provider acceptance tests (helpers live in
`tf_harness.py`, so they import cleanly beside the shared acceptance conftest)."""

from __future__ import annotations

import pytest

from tf_harness import Names, Terraform, ensure_built, provider_block, start_broker


@pytest.fixture(scope="session")
def provider_binary():
    return ensure_built("terraform-provider-sigil", "terraform-provider-sigil")


@pytest.fixture(scope="session")
def tf_broker(tmp_path_factory):
    """A dev-mode broker shared by the whole session, on a free port."""
    broker, stop = start_broker(tmp_path_factory.mktemp("sigil-data"))
    yield broker
    stop()


@pytest.fixture
def tf(tmp_path, provider_binary, tf_broker) -> Terraform:
    t = Terraform(tmp_path / "tf", provider_binary.parent)
    t.provider = provider_block(tf_broker)
    return t


@pytest.fixture
def names(request) -> Names:
    return Names(request.node.name)
