# Runtime image for reverb-edge: the Numba engine and CLI, without PyTorch.
# Builds for linux/arm64 (Raspberry Pi 4/5 with a 64-bit OS) and linux/amd64:
#   docker buildx build --platform linux/arm64,linux/amd64 -t reverb-edge .
#   docker run --rm reverb-edge eval mnist --dataset mnist-sample --limit 500
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY setup.py README.md ./
COPY reverb_edge ./reverb_edge
COPY converters ./converters

# The same install step as the README's first command (without the venv: the image is the isolation).
RUN pip install ".[samples]" && rm -rf /src

# Compile the Numba kernels once at build time, so a container never compiles on its first frame.
# The cache lands next to the installed package, which the non-root user can read.
RUN reverb-edge warmup

RUN useradd --create-home --uid 10001 reverb
USER reverb
WORKDIR /home/reverb

ENTRYPOINT ["reverb-edge"]
CMD ["--help"]
