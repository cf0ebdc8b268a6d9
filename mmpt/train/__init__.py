"""Training: the one loop (`fit`), evaluation, optimiser/schedule, resumable sampling, run files."""
