"""Saga tests use the end-to-end fixtures (a lab app and its pool in the test's process,
real ``seawall run`` processes)."""

from e2e.conftest import e2e, lab, lab_pool, pytest_runtest_makereport

__all__ = ["e2e", "lab", "lab_pool", "pytest_runtest_makereport"]
