#!/bin/sh
# The install step of the images that carry deepcritic (pipeline-base, generate, serve, train):
# exactly /tmp/requirements.lock, hash-checked and nothing resolved, then the WHEELs on top, also
# without resolving (deepcritic's own; train's source-built DeepSpeed and flash-attn), `pip check`,
# and the user app (uid 1000) they run as. pip's own settings come from the environment (the
# pipeline-base image's PIP_EXTRA_INDEX_URL: PyTorch's CPU wheel index). In a Dockerfile:
#   COPY images/install.sh images/<name>/requirements.lock /tmp/
#   RUN sh /tmp/install.sh WHEEL...
set -eu
pip install --no-cache-dir --no-deps --require-hashes -r /tmp/requirements.lock
pip install --no-cache-dir --no-deps "$@"
pip check
rm -rf /wheels /tmp/requirements.lock "$0"
useradd --create-home --uid 1000 app
