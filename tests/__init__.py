"""Breach Responder tests."""
