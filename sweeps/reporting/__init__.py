"""The results pages from recorded runs, by responsibility (``sweeps/report.py`` is the command):

- ``model``: tables, rows, sweep groups, gate rows; helpers that read export records (scores, commits)
- ``prereg``: the pre-registered analysis (``results/preregistration.yaml``)
- ``grouping``: records -> tables (grid cells), sweep groups (trials), main tables, gate rows
- ``primary``: the headline cells, the primary family (Holm over exactly it, MDEs), the learning curves
- ``targets``: the targets, decided from the primary family (met / not met / undecided)
- ``discussion``: exploratory comparisons (unadjusted p) of the per-task pages, and the context
- ``markdown``: the main page, the per-task pages, the overview page and the CSV summary
- ``plots``: the figures
- ``readme``: the README's generated results block (the page's verdicts)
"""
