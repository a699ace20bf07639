"""Entry points: flags -> one library call each; the one place that sets process-wide JAX
options (``runtime.start_process``). Console commands: ensembles-train, ensembles-analyze,
ensembles-run, ensembles-reproduce (or ``python -m ensembles.launch.<name>``)."""
