"""Fixtures for the foundation tests."""

import pytest

from .helpers import reverse_records


@pytest.fixture
def reverse_task():
    return reverse_records
