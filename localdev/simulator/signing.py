"""The key the simulator signs operator access tokens with, and the tokens (see identity.py).

One RSA 2048 key per simulator process (kept across ``/_sim/reset``: a validator caches the
JWKS); RS256 with a ``kid`` header, as Entra signs. Claims follow the v2.0 access-token
reference (learn.microsoft.com/entra/identity-platform/access-token-claims-reference).
"""
from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["AZURE_CLI_APP_ID", "DEFAULT_LIFETIME_S", "MAX_LIFETIME_S", "OperatorIssuer", "issuer_url"]

# The Azure CLI's well-known client id: what a token an operator gets with `az` names as azp.
AZURE_CLI_APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
MAX_LIFETIME_S = 24 * 3600
DEFAULT_LIFETIME_S = 3600


def issuer_url(base_url: str, tenant_id: str) -> str:
    return f"{base_url.rstrip('/')}/{tenant_id}/v2.0"


class OperatorIssuer:
    """The signing key and the token factory of one simulator instance."""

    def __init__(self, tenant_id: str, api_client_id: str) -> None:
        self.tenant_id = tenant_id
        self.api_client_id = api_client_id
        self.kid = secrets.token_urlsafe(16)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issued = 0

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def object_id(self, seeded: dict[str, str], upn: str | None, app: str | None) -> str:
        if upn and upn.lower() in seeded:
            return seeded[upn.lower()]
        name = upn.lower() if upn else f"app/{app}"
        return str(uuid.uuid5(uuid.UUID(self.tenant_id), name))

    def token(self, base_url: str, *, object_id: str, upn: str | None, app: str | None, roles: list[str],
              audience: str | None = None, lifetime_s: int = DEFAULT_LIFETIME_S, not_before_s: int = 0,
              tenant: str | None = None) -> tuple[str, int]:
        now = int(time.time())
        tid = tenant or self.tenant_id
        claims: dict[str, Any] = {
            "aud": audience or self.api_client_id,
            "iss": issuer_url(base_url, tid),
            "iat": now, "nbf": now + not_before_s, "exp": now + lifetime_s,
            "tid": tid, "oid": object_id, "sub": object_id, "ver": "2.0", "roles": roles,
            "uti": secrets.token_urlsafe(12), "rh": "0.local.",
        }
        if app:
            app_id = str(uuid.uuid5(uuid.UUID(self.tenant_id), f"appid/{app}"))
            claims.update(azp=app_id, azpacr="2")
        else:
            claims.update(azp=AZURE_CLI_APP_ID, azpacr="0", scp="user_impersonation", preferred_username=upn,
                          name=upn)
        self.issued += 1
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid}), claims["exp"]


