# docqa worker / producer image. The default torch wheel from PyPI includes CUDA, which
# the GPU worker needs; for a CPU-only image build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
FROM python:3.11-slim
ARG TORCH_INDEX=https://pypi.org/simple
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4"
COPY pyproject.toml README.md ./
COPY docqa ./docqa
COPY producer ./producer
COPY worker ./worker
COPY storage ./storage
COPY examples ./examples
RUN pip install .
# Model weights are downloaded on first use into this volume-friendly cache.
ENV HF_HOME=/models
CMD ["docqa", "--help"]
