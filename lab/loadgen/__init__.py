"""The load generator (scripts/loadgen): named workloads run by N client tasks.

    cli         the command line: options, dispatch, printed or JSON summary
    driver      task processes, threads, quotas, progress, the run and its summary
    workload    the Workload interface, its registry, what an op raises
    latency     Latencies (exact samples and a log-bucket histogram) and Meter
    sampler     psutil sampling of the watched processes
    table       the printed summary
    ipc         flood (RPCs to a server)
    vm          anon and mmap (memory pressure, mapped memfs files)
    ext2        seqwrite, randwrite, churn, dirtystorm (ext2fs files through io_write)
    vmworkload  VMWorkload: kernel VM counters, swap usage, work checked at the end
    pages       page patterns, classification of a wrong page, the page check
    files       task-side file helpers (create with dir_lookup, close releasing all)
    logstats    the records translators write to their logs (their statistics)
"""
