"""Finding checkpoints locally: a folder, or a Hugging Face repo already in the local cache.

Nothing is ever downloaded at run time. Every loader (generators, tokenizers, detectors, judges)
goes through ``local_snapshot`` and only words its own error, naming what to download and where.
"""
from __future__ import annotations

import os
from typing import Callable


def local_snapshot(name_or_path: str, missing: Callable[[bool, str], Exception],
                   cache_dir: str | None = None) -> str:
    """``name_or_path`` itself if it is a folder, else its snapshot in the Hugging Face cache.

    When neither exists, raises ``missing(invalid_id, cache)`` (chained to the hub's error):
    ``invalid_id`` is True when the name is not even a valid repo id, ``cache`` the cache searched.
    """
    if os.path.isdir(name_or_path):
        return name_or_path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(name_or_path, local_files_only=True, cache_dir=cache_dir)
    except (LocalEntryNotFoundError, HFValidationError) as err:
        raise missing(isinstance(err, HFValidationError), cache_dir or constants.HF_HUB_CACHE) from err
