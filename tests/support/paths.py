"""Where the repository and the shared files beside it live (import from here, never from conftest)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
PROCESSBENCH_DIR = SHARED / "data" / "processbench"
REFERENCE_DIR = SHARED / "reference" / "deepcritic"
