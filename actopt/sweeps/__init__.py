"""Studies as grids of configurations, run as child runs of one parent by process or Ray executors."""
