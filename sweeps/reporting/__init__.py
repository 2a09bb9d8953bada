"""The results page from recorded runs, by responsibility (``sweeps/report.py`` is the command):

- ``model``: tables, rows, sweep groups, gate rows; helpers that read export records
- ``grouping``: records -> tables (grid cells), sweep groups (trials), primary tables, gate rows
- ``targets``: the issue targets from the primary tables
- ``discussion``: paired comparisons, Holm over the page, the discussion section
- ``baselines``: trivial-baseline scores (``results/baselines.json``)
- ``markdown``: the page and the CSV summary
- ``plots``: the figures
- ``readme``: the README's generated results block
"""
