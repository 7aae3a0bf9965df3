"""``GET /v1/models``: the models the configured provider offers, in the OpenAI list shape."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from app.deps import ApiCallerDep, OrchestratorDep
from app.errors import NotFound

router = APIRouter(prefix="/v1", tags=["models"])


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def _card(card: Any) -> Model:
    return Model(id=card.id, created=card.created, owned_by=card.owned_by)


@router.get("/models", response_model=ModelList)
async def list_models(orchestrator: OrchestratorDep, _: ApiCallerDep) -> ModelList:
    return ModelList(data=[_card(card) for card in await orchestrator.list_models()])


def _model_id(model_id: str, request: Request) -> str:
    # ``{model_id:path}`` (ids have slashes: ``org/model``) also matches ``/v1/models/``, whose id is
    # empty; that path is an unknown route like every other trailing slash, said before auth is.
    if not model_id:
        raise NotFound(f"No route for {request.method} {request.url.path}.", code="unknown_route")
    return model_id


@router.get("/models/{model_id:path}", response_model=Model)
async def retrieve_model(
    model_id: Annotated[str, Depends(_model_id)], orchestrator: OrchestratorDep, _: ApiCallerDep
) -> Model:
    for card in await orchestrator.list_models():
        if card.id == model_id:
            return _card(card)
    raise NotFound(f"The model '{model_id}' does not exist here.", param="model", code="model_not_found")
