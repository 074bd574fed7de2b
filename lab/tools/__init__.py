"""Inspection tools shaped like the Hurd's (vmstat, vminfo, portinfo, rpctrace), run
through scripts/: each attaches to a running cluster as a task of its kernel."""
