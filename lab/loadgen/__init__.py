"""The load generator (scripts/loadgen): named workloads run by N client tasks.

    workload  the Workload interface, its registry, the errors an op raises
    driver    task processes, threads, quotas, progress, the run and its summary
    latency   Latencies (exact samples and a log-bucket histogram) and Meter
    sampler   psutil sampling of the watched processes
    table     the printed summary
    cli       the command line
    ipc       flood (RPCs to a server)
    vm        anon and mmap (memory pressure, mapped memfs files), page patterns
    ext2      seqwrite, randwrite, churn, dirtystorm (ext2fs files through io_write)
    logstats  the statistics records translators write to their logs
"""
