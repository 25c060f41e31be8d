"""Lightning callbacks: the methods' per-step work and the run's bookkeeping, one class per file."""
