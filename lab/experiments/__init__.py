"""Experiments (scripts/experiment): the seed's claims about the Hurd's VM, each shown on
real clusters under the configurations it compares, in one invocation.

    base       Claim, Configuration, Step, Experiment, the registry
    features   what this tree offers (pageout policies, kernel keys, ext2fs options):
               a configuration that needs something absent is "not available"
    recorder   the sampler thread: kernel counters, pager port queues, psutil, ~10 Hz
    runner     one configuration: a fresh cluster in its own run directory, the
               workload steps, the recorder, the time bound
    summary    pure: series, peaks, deltas, the first anonymous pageout, from samples
    report     the table (rich or plain), summary.json, report.md
    plot       the PNG of each experiment (matplotlib, Agg)
    cli        the command line: list, run, plot
    storm      E1: the thread storm and its cures
    cache_vs_anon  E5 (small form): clean file cache against anonymous memory
"""
