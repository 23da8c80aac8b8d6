"""Pytest plugins that start the services the tests need (Azurite, tenant simulator)."""
