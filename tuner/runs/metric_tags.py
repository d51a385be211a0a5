"""The TensorBoard tag of each reported metric, shared by a search trial's curves (tuner.runs.tensorboard_log)
and `train`'s (tuner.commands.train): a light module, so `train` imports neither Ray nor TensorBoard's plugins
for it."""
from __future__ import annotations

# Metric name -> TensorBoard tag; every reported metric gets a tag under val/, train/, ssl/,
# cluster/ or time/ (tuner.runs.tensorboard_log writes them).
TAG_PREFIXES = (("best_val_", "val/best_"), ("best_", "best/"), ("kmeans_objective", "cluster/objective"),
                ("chunks_per_s", "time/chunks_per_s"), ("ssl_cluster_", "ssl/cluster_"), ("val_", "val/"),
                ("ssl_", "ssl/"), ("loss_", "train/loss_"), ("time_", "time/"), ("cluster_", "cluster/"),
                ("nmi", "cluster/nmi"), ("fold", "folds/fold"), ("is_best", "val/is_best"),
                ("peak_rss_mb", "resources/peak_rss_mb"), ("peak_gpu_mb", "resources/peak_gpu_mb"))


def tag_for(metric: str) -> str:
    """TensorBoard tag of a reported metric: val_ccc_act -> val/ccc_act, nmi -> cluster/nmi."""
    for prefix, tag in TAG_PREFIXES:
        if metric.startswith(prefix):
            return tag + metric[len(prefix):]
    return f"other/{metric}"
