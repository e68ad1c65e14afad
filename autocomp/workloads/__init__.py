"""Built-in workloads (real data shipped offline)."""
