"""Maintenance scripts (run as ``python scripts/<name>.py``); importable as ``scripts.<name>``."""
