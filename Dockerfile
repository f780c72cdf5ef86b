# docqa image: workers, producer, the `docqa` command line and Flower.
#
#   docker build -t docqa:latest .                      # GPU: torch from PyPI, the CUDA build (~2.7 GB)
#   docker build -t docqa:cpu \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .   # CPU: the CPU build, no CUDA libraries
#
# docker-compose.yml builds both. The build context is filtered by .dockerignore (no .venv,
# .git, caches, stores or secrets).
FROM python:3.11-slim

# torch is pinned (the version CI tests) and installed first from the index the build arg
# names: a later plain "torch>=2.4" requirement is then already met, so pip keeps this build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://pypi.org/simple
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --index-url "$TORCH_INDEX" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY docqa ./docqa
COPY producer ./producer
COPY worker ./worker
COPY storage ./storage
COPY examples ./examples
# The [flower] extra: Flower runs from this image with docqa's own Celery app, so it speaks
# to the broker exactly as the workers do and reads DOCQA_BROKER_URL_FILE like them.
RUN pip install ".[flower]" \
    && python -c "import torch; v = torch.__version__; assert v.split('+')[0] == '$TORCH_VERSION', v; print('torch', v)"

# Not root: Celery warns on every start as root, and a process that is broken into owns
# less. A fixed uid, so host folders mounted for it can be made readable to it.
# /models (the Hugging Face cache) belongs to it: a new named volume mounted there takes
# this ownership.
RUN useradd --create-home --uid 10001 --user-group docqa \
    && mkdir -p /models /data \
    && chown docqa:docqa /models /data
ENV HF_HOME=/models
USER docqa
CMD ["docqa", "--help"]
