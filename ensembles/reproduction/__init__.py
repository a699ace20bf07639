"""The application layer of docs/REPRODUCTION.md: trains the paper-style sweeps and writes the
report (``report.regenerate``); its measurements are ``ensembles.analysis.design``."""
