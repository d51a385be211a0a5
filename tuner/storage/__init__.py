"""Where data lives: storage URIs (local folders and buckets) and the feature store's copy on each node."""
