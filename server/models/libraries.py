"""Keep diffusers and transformers quiet: progress bars and advice to install accelerate or torchvision belong in
a notebook, not in the server log or a command's output."""

from __future__ import annotations

import functools
import os


@functools.cache
def quiet_ml_libraries() -> None:
    # Some of the advice is printed while the libraries import: their environment switches come first.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
