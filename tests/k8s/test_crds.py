"""The CRD transform for a 1.20 API server, on a small schema (the real CRDs are exercised by the
smoke tests, which the server only passes once they are accepted)."""

from __future__ import annotations

from typing import Any

from .crds import for_old_apiserver


def test_for_old_apiserver_drops_what_1_20_rejects() -> None:
    ports = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["containerPort", "protocol", "name"],
        "items": {
            "type": "object",
            "properties": {
                "containerPort": {"type": "integer"},
                "protocol": {"type": "string", "default": "TCP"},
                "name": {"type": "string", "default": ""},
            },
        },
    }
    crd: dict[str, Any] = {
        "spec": {
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-validations": [{"rule": "self.a == self.b"}],
                            "properties": {"ports": ports, "mode": {"type": "string", "default": ""}},
                        }
                    },
                }
            ]
        }
    }

    fixed = for_old_apiserver(crd)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    assert "x-kubernetes-validations" not in fixed
    assert "default" not in fixed["properties"]["mode"]
    items = fixed["properties"]["ports"]["items"]
    assert "default" not in items["properties"]["name"]
    assert items["required"] == ["containerPort", "name"]  # protocol keeps its default instead
    assert "x-kubernetes-validations" in crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # a copy
