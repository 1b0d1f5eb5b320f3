"""One reader of submitted fields (negotiation.read_fields) for the schedule, restore and import forms;
each page names its own size cap."""

from __future__ import annotations

import io
import json
import urllib.parse

import bottle

from fmappliance.dashboard import negotiation, restore_flow

FIELDS = ("stack", "site", "count")


def request(body: bytes, content_type: str) -> bottle.BaseRequest:
    return bottle.BaseRequest(
        {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
    )


def as_json(value) -> bottle.BaseRequest:
    return request(json.dumps(value).encode(), "application/json; charset=utf-8")


def test_json_fields_come_as_sent_and_null_or_unknown_ones_are_left_out():
    found = negotiation.read_fields(as_json({"stack": "prod", "site": None, "count": 3, "x": 1}), FIELDS, max_bytes=100)
    assert found == ({"stack": "prod", "count": 3}, None, None)


def test_form_fields_are_all_there_as_text():
    body = urllib.parse.urlencode({"stack": "prod", "other": "x"}).encode()
    found = negotiation.read_fields(request(body, "application/x-www-form-urlencoded"), FIELDS, max_bytes=100)
    assert found == ({"stack": "prod", "site": "", "count": ""}, None, None)


def test_the_cap_is_the_callers_and_bad_json_is_said_with_the_fields():
    big = as_json({"stack": "p" * 200})
    assert negotiation.read_fields(big, FIELDS, max_bytes=100) == (None, 413, "The request is too large.")
    assert negotiation.read_fields(as_json({"stack": "p" * 200}), FIELDS, max_bytes=1000)[0] == {"stack": "p" * 200}
    assert negotiation.read_fields(request(b"{", "application/json"), FIELDS, max_bytes=100) == (
        None,
        400,
        "The body is not valid JSON; send an object with the fields stack, site and count.",
    )
    assert negotiation.read_fields(as_json([1]), FIELDS, max_bytes=100) == (
        None,
        400,
        "Send a JSON object with the fields stack, site and count.",
    )


def test_the_restore_forms_get_every_field_as_text_within_16_kib():
    body = {"target_stack": "prod", "create_site": True, "confirm": None}
    assert restore_flow.read_fields(as_json(body), restore_flow.RESTORE_FIELDS) == (
        {"target_stack": "prod", "target_site": "", "create_site": "true", "confirm": ""},
        None,
        None,
    )
    huge = as_json({"confirm": "x" * (16 * 1024)})
    assert restore_flow.read_fields(huge, restore_flow.IMPORT_FIELDS)[1] == 413
