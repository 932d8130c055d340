#!/bin/sh
# Python 3.11 for the CUDA images' runtime stage (generate, serve, train) from Ubuntu 22.04's
# packages, as the venv /opt/venv (their ENV puts /opt/venv/bin first on PATH). gcc and the Python
# headers are there for Triton's run-time compiled launchers; PACKAGEs: more of Ubuntu's, pinned
# (train: g++). In a Dockerfile:
#   COPY images/cuda-python.sh /tmp/
#   RUN sh /tmp/cuda-python.sh [PACKAGE=VERSION...]
set -eu
apt-get update
apt-get install -y --no-install-recommends "python3.11=3.11.*" "python3.11-venv=3.11.*" \
    "python3.11-dev=3.11.*" "gcc=4:11.2.*" "$@"
rm -rf /var/lib/apt/lists/* "$0"
python3.11 -m venv /opt/venv
