"""The HTTP API v1 (DESIGN §5): thin blueprints over the actions."""

from __future__ import annotations

from flask_smorest import Api

from sandbox.api import (
    audit,
    meta,
    model_products,
    models,
    principals,
    products,
    queries,
    scopes,
    verifications,
)
from sandbox.api.schemas import Error


class SandboxApi(Api):  # type: ignore[misc]
    """flask-smorest's Api documenting DESIGN §5's error body for every refusal."""

    ERROR_SCHEMA = Error


def register_blueprints(api: Api) -> None:
    """Register every blueprint on ``api``."""
    for module in (meta, principals, products, scopes, queries, audit):
        api.register_blueprint(module.blp)
    api.register_blueprint(verifications.products_blp)
    api.register_blueprint(verifications.calls_blp)
    api.register_blueprint(models.synthetic_blp)
    api.register_blueprint(models.train_blp)
    api.register_blueprint(model_products.blp)
