"""The shipped JSON Schema is the model's, draft-07 as editors read it, and every built-in profile
passes it (and names it in its yaml-language-server modeline)."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from stackpanel.core.profiles.jsonschema import DRAFT_07, MODELINE, SCHEMA_FILE, profile_json_schema, schema_text
from stackpanel.core.profiles.library import list_profiles

BUILTINS = [e for e in list_profiles() if e.builtin]


def test_the_shipped_schema_is_the_models() -> None:
    # when this fails: stackpanel schema > stackpanel/resources/profile.schema.json
    assert SCHEMA_FILE.read_text() == schema_text()


def test_the_schema_is_draft_07() -> None:
    schema = profile_json_schema()
    assert schema["$schema"] == DRAFT_07
    jsonschema.Draft7Validator.check_schema(schema)
    text = json.dumps(schema)
    assert "$defs" not in text and "prefixItems" not in text and "$dynamicRef" not in text


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_every_builtin_profile_passes_the_schema_and_names_it(entry) -> None:
    text = entry.path.read_text()
    assert text.splitlines()[0] == MODELINE
    jsonschema.Draft7Validator(profile_json_schema()).validate(yaml.safe_load(text))


def test_the_schema_catches_what_editors_should_underline() -> None:
    validator = jsonschema.Draft7Validator(profile_json_schema())
    bad = {"version": 1, "name": "x", "nodes": {"web": {"kind": "nginx", "port": 99999, "wokers": 2,
                                                         "routes": [{"path": "/", "to": "app"}]}}}
    messages = {e.message for e in validator.iter_errors(bad)}
    assert any("wokers" in m for m in messages) or any("99999" in m for m in messages), messages
