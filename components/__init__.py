"""KFP v2 lightweight components: one folder per stage, each a thin wrapper over one ``run(config)``.

Every component takes ``profile`` (the stage's YAML preset: tiny | local | paper) and
``overrides`` (``key=value`` strings for its stage config), reads its input artifacts, calls the
stage and writes Dataset/Model/Metrics artifacts. Base images come from :mod:`deepcritic.platform.images`.
Components are built with ``install_kfp_package=False``: the images ship kfp, and the local runner
uses this Python without installing anything.
"""
