"""egressaudit: measure what a video-conferencing client sends, to whom, and of what kind."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("egressaudit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
