"""/ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7644 §4): what we support, exactly."""

from __future__ import annotations

import falcon

from domain.errors import NotFound
from domain.schemas import LIST_RESPONSE, RESOURCE_TYPES, SCHEMAS, SP_CONFIG


def service_provider_config(max_results: int) -> dict:
    return {
        "schemas": [SP_CONFIG],
        "documentationUri": "https://github.com/scimledger/scimledger#readme",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A long-lived secret token issued by `scimledger token create`",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": "/ServiceProviderConfig"},
    }


def _located(document: dict, base: str) -> dict:
    meta = dict(document["meta"], location=base + document["meta"]["location"])
    return {**document, "meta": meta}


def _listed(documents: list[dict]) -> dict:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(documents),
        "Resources": documents,
        "startIndex": 1,
        "itemsPerPage": len(documents),
    }


class ServiceProviderConfig:
    def __init__(self, base: str, max_results: int):
        self.base = base
        self.document = service_provider_config(max_results)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = _located(self.document, req.prefix + self.base)


class Catalogue:
    """A read-only list of documents, each also readable by id (ResourceTypes, Schemas)."""

    def __init__(self, base: str, documents: list[dict], kind: str):
        self.base = base
        self.documents = {d["id"]: d for d in documents}
        self.kind = kind

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        base = req.prefix + self.base
        resp.media = _listed([_located(d, base) for d in self.documents.values()])

    def on_get(self, req: falcon.Request, resp: falcon.Response, document_id: str) -> None:
        document = self.documents.get(document_id) or next(
            (d for i, d in self.documents.items() if i.lower() == document_id.lower()), None
        )
        if document is None:
            raise NotFound(f"no {self.kind} {document_id!r}")
        resp.media = _located(document, req.prefix + self.base)


def resource_types(base: str) -> Catalogue:
    return Catalogue(base, [rt.to_scim() for rt in RESOURCE_TYPES], "resource type")


def schemas(base: str) -> Catalogue:
    return Catalogue(base, [s.to_scim() for s in SCHEMAS], "schema")
