"""The OpenAPI document is generated from the routes' msgspec types, and /docs works with no internet."""

import re


def test_openapi_document(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert "/health" in doc["paths"]
    config = doc["paths"]["/api/v1/app/config"]["get"]
    assert config["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AppConfig"
    }
    schemas = doc["components"]["schemas"]
    assert "schedulers" in schemas["AppConfig"]["properties"]
    # WebSocket events are published as components so clients can generate code for them too.
    assert "GeneratorProgress" in schemas and "ImageCreated" in schemas


def test_docs_page_loads_nothing_from_the_internet(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text
    assert not re.search(r"""(src|href)=["']https?://""", response.text)


def test_version_and_config(client):
    assert client.get("/api/v1/app/version").json()["version"]
    config = client.get("/api/v1/app/config").json()
    assert "euler" in config["schedulers"]
    assert config["folders"]["images"] == "outputs/images"
    assert config["token_required"] is False
