"""Experiments (scripts/experiment): the seed's claims about the Hurd's VM, each shown on
real clusters under the configurations it compares, in one invocation.

    base       Claim, Configuration, Step, Experiment, the registry
    features   what this tree offers (pageout policies, kernel keys, ext2fs options):
               a configuration that needs something absent is "not available"
    recorder   the sampler thread: kernel counters, pager port queues, psutil, ~10 Hz
    runner     one configuration: a fresh cluster in its own run directory, the
               workload steps, the recorder, the time bound; every run of an invocation
    repeat     pure: --repeat's alternating order, a configuration's runs as one result
    calibration  floor RTT and kernel null RPC (lab.bench's roles), disk per write, memory
    summary    pure: series, peaks, deltas, the first anonymous pageout, from samples
    report     the table (rich or plain), summary.json, report.md (one document)
    report_html  index.html: the same document as one self-contained page
    plot       the PNGs of each experiment: time series, latency CDFs, bars (matplotlib)
    progress   what run shows while it runs: rich bars on a terminal, plain lines else
    cli        the command line: list, run, plot
    storm      E1: the thread storm and its cures
    cache_vs_anon  E5 (small form): clean file cache against anonymous memory
"""
