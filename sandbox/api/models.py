"""Sandbox model development and model products (DESIGN §11): thin handlers."""

from __future__ import annotations

from flask import Response, request
from marshmallow import Schema, fields

from sandbox.actions import models
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, respond_csv, runtime
from sandbox.api.schemas import Budget
from sandbox.models.requests import (
    SyntheticRequest,
    SyntheticRequestSchema,
    TrainRequest,
    TrainRequestSchema,
)

synthetic_blp = Blueprint(
    "synthetic",
    __name__,
    url_prefix="/v1/products",
    description="DP synthetic data for model development (数据沙箱模型开发)",
)
train_blp = Blueprint(
    "training", __name__, url_prefix="/v1/models", description="DP model training"
)


class ModelPreview(Schema):
    epsilon = fields.Float()
    accuracy = fields.List(fields.Dict())


class SyntheticAnswer(Schema):
    columns = fields.List(fields.String())
    rows = fields.List(fields.List(fields.Raw()))
    method = fields.String()
    accuracy = fields.List(fields.Dict())
    epsilon_spent = fields.Float()
    budget = fields.Nested(Budget)
    release = fields.String()
    receipt = fields.String()


class TrainAnswer(Schema):
    model = fields.Dict(metadata={"description": "the exact JSON a model product publishes"})
    metrics = fields.Dict()
    accuracy = fields.List(fields.Dict())
    epsilon_spent = fields.Float()
    budget = fields.Nested(Budget)
    release = fields.String()
    receipt = fields.String()


def _wants_csv() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


@synthetic_blp.route("/<product_id>/synthetic/preview", methods=["POST"])
@synthetic_blp.arguments(SyntheticRequestSchema)
@synthetic_blp.response(200, ModelPreview)
@synthetic_blp.doc(summary="Cost and accuracy of a synthetic-data request; nothing spent")
def synthetic_preview(req: SyntheticRequest, product_id: str) -> Response:
    return respond(models.synthetic_preview(runtime(), caller(), product_id, req))


@synthetic_blp.route("/<product_id>/synthetic", methods=["POST"])
@synthetic_blp.arguments(SyntheticRequestSchema)
@synthetic_blp.response(200, SyntheticAnswer)
@synthetic_blp.doc(summary="DP synthetic rows (JSON, or CSV with Accept: text/csv)")
def synthetic(req: SyntheticRequest, product_id: str) -> Response:
    pending = models.synthetic(runtime(), caller(), product_id, req)
    return respond_csv(pending) if _wants_csv() else respond(pending)


@train_blp.route("/train/preview", methods=["POST"])
@train_blp.arguments(TrainRequestSchema)
@train_blp.response(200, ModelPreview)
@train_blp.doc(summary="Cost and accuracy of a training request; nothing spent")
def train_preview(req: TrainRequest) -> Response:
    return respond(models.train_preview(runtime(), caller(), req))


@train_blp.route("/train", methods=["POST"])
@train_blp.arguments(TrainRequestSchema)
@train_blp.response(200, TrainAnswer)
@train_blp.doc(summary="Train a DP model (linear_regression or scorecard)")
def train(req: TrainRequest) -> Response:
    return respond(models.train(runtime(), caller(), req))
