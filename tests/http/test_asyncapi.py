"""`/asyncapi.json` and `/asyncapi.yaml`: the document `mussikon asyncapi` prints, public."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from mussikon.entrypoints.asyncapi import asyncapi_document, render
from tests.http.conftest import serving, settings_for

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "asyncapi"
                     / "asyncapi-3.0.0.schema.json").read_text())


async def test_the_api_serves_the_document_as_json_and_yaml_without_a_caller(
        tmp_path: Path) -> None:
    settings = settings_for("memory", tmp_path, rabbitmq_prefix="api.")
    async with serving(settings) as api:
        as_json = await api.client.get("/asyncapi.json")
        as_yaml = await api.client.get("/asyncapi.yaml")
        assert not {"/asyncapi.json", "/asyncapi.yaml"} & set(api.api.openapi()["paths"])
    assert as_json.status_code == 200 and as_yaml.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    document = as_json.json()
    assert yaml.safe_load(as_yaml.text) == document
    assert document == json.loads(render(await asyncapi_document(settings), "json"))
    assert document["channels"]["rabbitmq.dlq"]["address"] == "api.mussikon.dlq"
    jsonschema.Draft7Validator(SCHEMA).validate(document)
