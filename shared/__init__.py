"""Breach Responder: the app's own package (domain logic, adapters, steps, CLI)."""
