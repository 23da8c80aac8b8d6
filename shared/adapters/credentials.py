"""The one credential a worker uses for Graph and Exchange Online.

In Azure this is the function app's managed identity (user-assigned: AZURE_CLIENT_ID);
locally the same ManagedIdentityCredential flow talks to the tenant simulator's token
endpoint through IDENTITY_ENDPOINT / IDENTITY_HEADER. Tokens are cached in memory by
azure-identity and never written to disk or logged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from azure.identity.aio import DefaultAzureCredential

logger = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
EXO_SCOPE = "https://outlook.office365.com/.default"


def build_credential() -> DefaultAzureCredential:
    """DefaultAzureCredential without the interactive / developer-tool fallbacks a worker never has."""
    return DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_powershell_credential=True,
        exclude_developer_cli_credential=True,
        exclude_shared_token_cache_credential=True,
    )


REFRESH_BEFORE_S = 300  # ask for a new token this long before the cached one expires


class BearerToken:
    """The ``Authorization`` value for one scope, asked of the credential only when the token it
    holds is about to expire (the SDK's auth pipeline per request is what the hot path drops).
    Held in memory only; never logged."""

    def __init__(self, credential: Any, scope: str, clock: Any = time.time) -> None:
        self._credential, self._scope, self._clock = credential, scope, clock
        self._value = ""
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    async def header(self) -> str:
        if self._clock() < self._expires_on - REFRESH_BEFORE_S:
            return self._value
        async with self._lock:
            if self._clock() >= self._expires_on - REFRESH_BEFORE_S:
                token = await self._credential.get_token(self._scope)
                self._value = f"Bearer {token.token}"
                self._expires_on = float(token.expires_on)
        return self._value

    def forget(self) -> None:
        """Drop the token (a 401 said it is no good): the next call asks the credential again."""
        self._expires_on = 0.0
