"""LAD's Optuna sweeper for Hydra (optuna >= 4, ask/tell API).

Select it with ``hydra/sweeper=lad_optuna``. The plugin class lives in
``sweeper.py``; the Optuna-dependent code is in private modules (``_impl``,
``_space``, ``_study``) so that Hydra's plugin scan does not import Optuna for
applications that never sweep.
"""
