"""The embedded model's parts, one job a module: what llama-cpp-python must provide
(:mod:`._compat`), the CPU check (:mod:`._probe`), loading a model once with its prefix cache
(:mod:`._loader`), and writing answers token by token (:mod:`._decoder`).
:class:`~bilevel_optuna.chat.LocalChatModel` (``chat/_local.py``) puts them together.
"""
