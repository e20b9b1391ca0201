"""What every other part relies on: the config tree, per-sample sequence layouts, the
attention masks derived from them, and the run's device, seed and mode."""
