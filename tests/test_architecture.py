"""The layering holds (import-linter's contracts in ``.importlinter``, function-level
imports included): core/ imports no domain, events/ never imports jobs/, resources ->
services -> models in each domain, no services or models module imports any
resources module, no cycle between the packages (nor between the modules of one),
and models import no logic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), "pip install import-linter (requirements-dev.txt)"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "6 kept" in done.stdout, done.stdout[-2000:]
