"""`trace --html FILE`: one self-contained HTML page of a traced forward pass."""

import os


def check_writable(path):
    """A ValueError naming --html when `path`'s folder does not exist or cannot be written, so the
    forward pass is not run for nothing."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"--html {path}: cannot write there")


def write_page(path, report):
    raise NotImplementedError
