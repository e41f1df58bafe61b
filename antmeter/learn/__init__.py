"""Learning: datasets, purged folds, baselines, metrics, models, the Lightning loop, the training recipe,
plots, ONNX export and the served model bundle."""
