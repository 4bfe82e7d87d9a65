"""flexrec.testing."""
