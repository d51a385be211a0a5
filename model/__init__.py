"""DeepEmoCluster: corpora, features, the feature store, the network and its training. Never imports ray."""
