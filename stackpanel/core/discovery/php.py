"""The system's php-fpm: where it is and its version (``php-fpm -v``)."""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from stackpanel.core.discovery.executables import _run, find_executable

log = logging.getLogger("stackpanel.discovery")

#: Debian installs it versioned (php-fpm8.2, no plain name); RHEL, Arch, Alpine and Homebrew as php-fpm
#: (Alpine: php-fpm82 / php-fpm83). Newest first.
PHP_FPM_NAMES: tuple[str, ...] = (
    "php-fpm", "php-fpm8.4", "php-fpm8.3", "php-fpm8.2", "php-fpm8.1", "php-fpm8.0", "php-fpm7.4",
    "php-fpm84", "php-fpm83", "php-fpm82", "php-fpm81",
)

_VERSION_RE = re.compile(r"^PHP (\d+\.\d+\.\d+)\S* \(fpm", re.MULTILINE)


@dataclass(frozen=True)
class PhpFpmInfo:
    path: Path
    version: str  # "8.2.36" ("" when it could not be read)


def parse_php_fpm_version(path: Path, text: str) -> PhpFpmInfo:
    match = _VERSION_RE.search(text)
    return PhpFpmInfo(path=path, version=match.group(1) if match else "")


@functools.cache
def find_php_fpm(search_path: str | None = None) -> PhpFpmInfo | None:
    """The php-fpm binary on this machine and its version, or None when there is none."""
    path = find_executable(PHP_FPM_NAMES, search_path)
    if path is None:
        log.info("php-fpm not found")
        return None
    rc, out, err = _run([str(path), "-v"])
    info = parse_php_fpm_version(path, out + err)
    if not info.version:
        log.warning("could not read the php-fpm version from %s -v (exit %d): %s", path, rc, err.strip())
    return info
