"""``make reproduce-table``: run the papers' rows (``experiments/``) and rebuild their tables from
the runs' own ``metrics.json`` files."""
