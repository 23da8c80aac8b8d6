"""Dev-only tooling: tenant simulator, local Functions host, stack control. Never deployed."""
