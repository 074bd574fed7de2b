"""Bounded stress tests: real processes, bounded in count and time, run with the rest."""
