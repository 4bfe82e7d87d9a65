"""flexrec.needs."""
