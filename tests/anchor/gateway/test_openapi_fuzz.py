"""schemathesis over the gateway's own /openapi.json, against the real server: no request it generates gets a
5xx, and none gets a 2xx without the credentials the operation needs (anonymous, a node:read-only token, an
admin token), valid and invalid (negative) requests. ~30 s here: marked slow. A local run with 100
examples per operation (~80 s) found nothing either."""

from __future__ import annotations

from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import pytest
import schemathesis
import trio

from tests.anchor.gateway.conftest import Gateway, StartGateway
from tests.anchor.gateway.test_security_review import mailbox_gateway

EXAMPLES_PER_OPERATION = 25
PUBLIC = {("GET", "/v1/health"), ("POST", "/v1/auth/token")}


def _fuzz(schema_doc: dict[str, Any], base_url: str, headers: dict[str, str], check: Any) -> list[str]:
    """Run every operation's strategy; returns the problems found (empty: none)."""
    schema = schemathesis.openapi.from_dict(schema_doc)
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here: a failure too
        _fuzz_operation(operation, base_url, headers, check, problems)
    return problems


def _fuzz_operation(operation: Any, base_url: str, headers: dict[str, str], check: Any, problems: list[str]) -> None:
    method, path = operation.method.upper(), operation.path
    # Valid requests and invalid ones (wrong types, missing fields, bad formats): neither may give a 5xx.
    cases = st.one_of(operation.as_strategy(), operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=cases)
    def run(case: Any) -> None:  # a schemathesis.Case
        response = case.call(base_url=base_url, headers={**dict(case.headers or {}), **headers})
        problem = check(method, path, response.status_code)
        if problem:
            problems.append(f"{method} {path} -> {response.status_code}: {problem} ({response.text[:200]})")

    run()


async def test_no_5xx_and_no_unauthorised_success(start_gateway: StartGateway) -> None:
    gateway, _service = await mailbox_gateway(start_gateway)  # with the mailbox: GET /v1/mailbox is fuzzed too
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        await _fuzz_gateway(gateway, client)


async def _fuzz_gateway(gateway: Gateway, client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert {"peer", "signature", "grant", "ack"} <= {
        p["name"] for p in doc["paths"]["/v1/mailbox"]["get"]["parameters"]
    }
    admin_id, admin_secret = await gateway.key("admin")
    admin = await gateway.token(client, admin_secret)
    _reader_id, reader_secret = await gateway.key("user", frozenset({"node:read"}))
    reader = await gateway.token(client, reader_secret)

    def anonymous(method: str, path: str, status: int) -> str | None:
        if status >= 500:
            return "server error"
        if (method, path) not in PUBLIC and status < 400:
            return "succeeded without a token"
        return None

    def node_reader(method: str, path: str, status: int) -> str | None:
        if status >= 500:
            return "server error"
        allowed = PUBLIC | {("GET", "/v1/node"), ("GET", "/v1/peers")}
        if (method, path) not in allowed and status < 400:
            return "succeeded without the scope"
        return None

    def administrator(method: str, path: str, status: int) -> str | None:
        return "server error" if status >= 500 else None

    runs = [({}, anonymous), ({"Authorization": f"Bearer {reader}"}, node_reader)]
    runs.append(({"Authorization": f"Bearer {admin}"}, administrator))
    for headers, check in runs:
        problems = await trio.to_thread.run_sync(_fuzz, doc, gateway.url, headers, check)
        assert problems == [], "\n".join(problems[:20])
    # The fuzzer got through to the handlers with valid requests too (it is not only collecting 401s/422s).
    with trio.fail_after(20):  # what it sent reaches the node through the queue
        await gateway.node.wait_until(lambda: any(m.text for m in gateway.node.outgoing.values()))
    assert {"keys.create", "mailbox.fetch"} <= {r.action for r in await gateway.audit_of(admin_id)}


pytestmark = pytest.mark.slow
