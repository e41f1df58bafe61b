-- Extra databases next to Dagster's own: the market store and MLflow's backend store.
CREATE DATABASE market OWNER antmeter;
CREATE DATABASE mlflow OWNER antmeter;
