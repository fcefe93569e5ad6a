"""spprof's benchmarks: scripts that print figures (see __main__.py)."""
