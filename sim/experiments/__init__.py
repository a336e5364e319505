"""Many runs of a scenario: sweeps, plans and sensitivity, on local processes or Dask."""
