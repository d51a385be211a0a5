"""DeepEmoCluster Tuner: orchestration (Ray Tune + Optuna) and the command line."""
