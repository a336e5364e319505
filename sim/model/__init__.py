"""Scenario files to validated models: units, fields, loading, parameters, workload."""
