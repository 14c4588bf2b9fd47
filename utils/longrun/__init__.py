"""Runs that outlive a process: stopping on a signal, resuming where a run stopped, the run
directory and its per-epoch log."""
