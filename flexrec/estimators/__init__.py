"""flexrec.estimators."""
