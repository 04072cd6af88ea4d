"""/ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7644 §4): what we support, exactly."""

from __future__ import annotations

import falcon

from domain.errors import NotFound
from domain.schemas import DEFAULT_SCHEMAS, LIST_RESPONSE, SP_CONFIG, SchemaSet
from domain.sets import EVENT_URIS


def service_provider_config(max_results: int, bulk_operations: int = 0, bulk_payload: int = 0,
                            default_count: int = 100, cursor_timeout: int = 3600) -> dict:
    return {
        "schemas": [SP_CONFIG],
        "documentationUri": "https://github.com/scimledger/scimledger#readme",
        "patch": {"supported": True},
        "bulk": {"supported": bulk_operations > 0, "maxOperations": bulk_operations, "maxPayloadSize": bulk_payload},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        # RFC 9865 §4: both methods; index unless the request says cursor.
        "pagination": {
            "cursor": True,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": default_count,
            "maxPageSize": max_results,
            "cursorTimeout": cursor_timeout,
        },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A long-lived secret token issued by `scimledger token create`",
                "primary": True,
            }
        ],
        # RFC 9967 §2.5: the SCIM events our feeds send (adapters.feeds); no async requests.
        "securityEvents": {"asyncRequest": "none", "eventUris": list(EVENT_URIS)},
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
    def __init__(self, base: str, max_results: int, **limits):
        self.base = base
        self.document = service_provider_config(max_results, **limits)

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


def resource_types(base: str, schema_set: SchemaSet = DEFAULT_SCHEMAS) -> Catalogue:
    return Catalogue(base, [rt.to_scim() for rt in schema_set.resource_types], "resource type")


def schemas(base: str, schema_set: SchemaSet = DEFAULT_SCHEMAS) -> Catalogue:
    return Catalogue(base, [s.to_scim() for s in schema_set.schemas], "schema")
