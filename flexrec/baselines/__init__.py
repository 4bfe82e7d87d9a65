"""flexrec.baselines."""
