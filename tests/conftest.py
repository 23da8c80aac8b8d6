"""Shared pytest configuration: service fixtures live in tests/plugins/ (one module per service)."""
pytest_plugins = [
    "tests.plugins.azurite",
    "tests.plugins.simulator",
    "tests.plugins.tenant_world",
    "tests.plugins.browser",
]
