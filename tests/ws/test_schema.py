"""Every event and client message of the WebSocket protocol is in the OpenAPI document, tagged by `type`."""

from server.events import ServerEvent
from server.ws.messages import ClientRequest


def test_every_event_and_message_is_a_component_tagged_by_type(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for struct in (*ServerEvent.__args__, *ClientRequest.__args__):
        schema = schemas[struct.__name__]
        assert schema["properties"]["type"] == {"enum": [struct.__struct_config__.tag]}, struct.__name__
    assert set(schemas["Subscribe"]["properties"]) == {"type", "sessions", "since"}
    assert {"seq", "timestamp", "session_id", "step", "total_steps"} <= set(schemas["GeneratorProgress"]["properties"])
