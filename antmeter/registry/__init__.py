"""The model registry: MLflow tracking, registered versions and aliases, the promotion gate."""
