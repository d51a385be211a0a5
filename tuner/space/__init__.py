"""The search space: its schema as data and the YAML that describes it (read by the driver and by the readers
of a finished run alike)."""
