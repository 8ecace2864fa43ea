"""The anchor's HTTP gateway: an ASGI app (:mod:`.app`) served by hypercorn's trio worker (:mod:`.server`),
with API keys, OAuth2 client credentials, JWT access tokens, roles and scopes (:mod:`.auth`), rate limits and
an audit log on the anchor's stores (:mod:`.stores_adapter`)."""
