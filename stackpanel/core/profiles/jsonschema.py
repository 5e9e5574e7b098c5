"""The profile's JSON Schema, generated from the model, for the editors people already use.

pydantic writes draft 2020-12 (``$defs``); yaml-language-server (VS Code's YAML extension)
validates as draft-07, so definitions move to ``definitions`` and ``$schema`` says draft-07. The
schema describes shapes and ranges; the rules that need the file system or several nodes at once
(ports, routes, reachability, paths) stay in stackpanel's own validation, which names file:line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stackpanel.core.profiles.schema import Profile

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
#: Shipped in the package; built-in profiles point at it with a yaml-language-server modeline.
SCHEMA_FILE = Path(__file__).resolve().parent.parent.parent / "resources" / "profile.schema.json"
MODELINE = "# yaml-language-server: $schema=../resources/profile.schema.json"


def _draft07(node: Any) -> Any:
    if isinstance(node, dict):
        return {("definitions" if k == "$defs" else k): _draft07(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_draft07(v) for v in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):  # $ref and the discriminator's mapping
        return node.replace("#/$defs/", "#/definitions/", 1)
    return node


def profile_json_schema() -> dict[str, Any]:
    schema = _draft07(Profile.model_json_schema(mode="validation"))
    return {"$schema": DRAFT_07, "title": "stackpanel profile",
            "description": "A topology of nginx/Apache proxies and gunicorn/uvicorn app servers.", **schema}


def schema_text() -> str:
    return json.dumps(profile_json_schema(), indent=2, sort_keys=True) + "\n"
