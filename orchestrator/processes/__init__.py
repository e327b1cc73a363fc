"""The long-running processes: the cancel worker and the reconciler. Thin loops."""
