"""machemu's lab: everything that drives the emulated system from outside — the run
directory, child processes, clusters, status, the load generator and the benchmarks.

``lab`` imports ``protocol``, ``kernel`` and ``translators``; none of them imports ``lab``.
"""
