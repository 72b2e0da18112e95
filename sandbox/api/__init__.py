"""The HTTP API v1 (DESIGN §5): thin blueprints over the actions and stores."""

from __future__ import annotations

from flask_smorest import Api

from sandbox.api import audit, meta, principals, products, queries, scopes, verifications
from sandbox.api.schemas import register_schemas


def register_blueprints(api: Api) -> None:
    """Register the schemas and every blueprint on ``api``."""
    register_schemas(api)
    for module in (meta, principals, products, scopes, queries, audit):
        api.register_blueprint(module.blp)
    api.register_blueprint(verifications.products_blp)
    api.register_blueprint(verifications.calls_blp)
