"""The folder of Numba's cache of compiled kernels, also for a read-only install.

Numba caches a compiled function next to its source file (``__pycache__``)
and, when that folder is read-only, in the user's cache folder
(``~/.cache/numba``). When neither is writable, as for a system-wide install
run by a service user without a home, Numba raises at import. Then
:func:`configure_cache` points ``numba.config.CACHE_DIR`` at a private folder
in the temporary directory. An explicit ``NUMBA_CACHE_DIR`` always wins.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["cache_dir", "configure_cache"]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _user_cache_dir() -> Path:
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)


def configure_cache(package_dir: Path | None = None, user_dir: Path | None = None) -> Path | None:
    """Set ``numba.config.CACHE_DIR`` to a writable fallback if Numba has nowhere to cache; return it.

    ``package_dir`` and ``user_dir`` default to the kernels' folder and
    Numba's user cache folder. Returns None when Numba's own locations work.
    """
    from numba.core import config

    if config.CACHE_DIR:
        return Path(config.CACHE_DIR)
    package_dir = package_dir or Path(__file__).resolve().parent / "kernels"
    if _writable(package_dir / "__pycache__") or _writable(user_dir or _user_cache_dir()):
        return None

    fallback = Path(tempfile.gettempdir()) / f"reverb-edge-numba-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    config.CACHE_DIR = str(fallback)
    logger.info("the install folder and %s are read-only; caching compiled kernels in %s",
                user_dir or _user_cache_dir(), fallback)
    return fallback


def cache_dir() -> Path:
    """Return the folder where Numba caches the kernels of this package."""
    from numba.core import config

    if config.CACHE_DIR:
        return Path(config.CACHE_DIR)
    package_dir = Path(__file__).resolve().parent / "kernels"
    return package_dir / "__pycache__" if _writable(package_dir / "__pycache__") else _user_cache_dir()
