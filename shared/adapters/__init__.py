"""Adapters: the only code that talks to Graph, Exchange Online, queues and tables."""
