"""LAD's Optuna sweeper for Hydra (optuna >= 4, ask/tell API), a superset of hydra-optuna-sweeper 1.3.

Select it with ``hydra/sweeper=lad_optuna``. The plugin class lives in ``sweeper.py``; the
Optuna-dependent code is in private modules (``_impl``, ``_study``) so that Hydra's plugin scan does
not import Optuna for applications that never sweep. Search space grammar and study helpers are
shared with the in-process search: ``lad.search.space`` and ``lad.search.studies``.
"""
