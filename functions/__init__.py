"""Thin trigger adapters (blueprints): decode the input, call shared/, record the outcome."""
