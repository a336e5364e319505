"""From a run's records to figures: metrics, outages, queueing theory."""
