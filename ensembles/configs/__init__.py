"""Sweep configs, one file per sweep (``get_config(arg)``); ``common`` holds every default.

Config files import only ``ml_collections`` and ``ensembles.configs.common``.
"""
