"""Build tooling for the container images (run by ``make`` and the images workflow; not shipped).

* :mod:`images.tools.locks`: ``make lock``, every image's requirements.lock from one resolution.
* :mod:`images.tools.check`: ``make images-check``, the locks installed and started without Docker.
* :mod:`images.tools.digests`: record pushed digests, pin Dockerfile bases (images workflow).
"""
