"""flexrec.rewards."""
