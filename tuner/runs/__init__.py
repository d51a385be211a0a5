"""A run folder and everything read from or written into it: the manifest, the Optuna studies, Ray's trial
records and result rows, the TensorBoard log, the confirmation's files, the status summary and the export of
the best configs. Nothing here starts Ray."""
