"""Benchmark grids: expansion, a resumable runner and reports (``flexrec-bench``)."""
