"""The supervisors' JSON API under /api/v1/ (described by its own OpenAPI document) and the console
page that uses it, on the daemon's HTTP listener (docs/api.md)."""

from hotline.adapters.api.auth import AuthObserver
from hotline.adapters.api.routes import Api, Sources, Supervising

__all__ = ["Api", "AuthObserver", "Sources", "Supervising"]
