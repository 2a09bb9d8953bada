"""Drivers behind the results page: teachers, ablation grid, export of runs, report."""
