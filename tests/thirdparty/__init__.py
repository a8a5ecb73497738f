"""Backends written the way a third party would: against queuekit's public API only."""
