"""Benchmarks of LAD (run as scripts: ``python benchmarks/<name>.py``); importable as ``benchmarks.<name>``."""
