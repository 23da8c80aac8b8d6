"""Helpers the test modules share (fakes, polling, storage readers, the infra evaluator).

Test modules import from here, never from one another."""
