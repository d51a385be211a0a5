"""Running a search on Ray Tune: the driver, the trainable, the searcher and scheduler wrappers, the studies
side by side and the handling of stop signals."""
