"""The CLI, or any Python, run in a child process from the checkout root. No torch import: a child
that blocks torch imports this module too."""

import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


# The console script's main in an interpreter where `import torch` raises ImportError
# (sys.modules["torch"] = None), as on a machine without torch.
NO_TORCH = "import sys; sys.modules['torch'] = None; from llama2_scratch.cli import main; sys.exit(main(sys.argv[1:]))"


def run_python(*argv, cwd=REPO, env=None, timeout=300):
    """`python ARGV...` in a child process: PYTHONPATH is the checkout root (so the child imports
    this checkout's packages from any cwd), os.environ updated by `env`. Arguments may be paths.
    Returns the CompletedProcess, stdout and stderr as text; raises TimeoutExpired past `timeout` s."""
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def run_cli(*args, with_torch=False, **kwargs):
    """`llama2-scratch ARGS...` run as run_python runs it (same keywords): by default where torch
    cannot be imported, as the inference commands must run; with_torch=True as
    `python -m llama2_scratch` (train, ckpt.pt files)."""
    command = ("-m", "llama2_scratch") if with_torch else ("-c", NO_TORCH)
    return run_python(*command, *args, **kwargs)
