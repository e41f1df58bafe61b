# One image for the code server, webserver, daemon and Celery workers (one Dagster version, one code
# version: workers refuse runs of a code server that runs other code).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 DAGSTER_HOME=/opt/dagster/home
WORKDIR /opt/antmeter
COPY pyproject.toml requirements.lock README.md ./
COPY antmeter ./antmeter
COPY antmeter_assets ./antmeter_assets
COPY antmeter_resources ./antmeter_resources
COPY antmeter_deploy ./antmeter_deploy
COPY examples ./examples
COPY antmeter_api ./antmeter_api
# torch==2.13.0 from the CPU index keeps the image free of a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c requirements.lock '.[celery]'
COPY dagster.yaml workspace.yaml /opt/dagster/home/
# The Celery deployment's instance (docker-compose.celery.yml points DAGSTER_HOME here).
COPY deploy/celery/dagster.yaml workspace.yaml /opt/dagster/celery/
