"""gRPC channels from this shard to the others: the peer token on every call, TLS when the service speaks it.

With ``grpc.tls_cert_file`` set the shards talk TLS to each other, verifying certificates against
``shards.tls_ca_file`` (the system roots when empty); with mutual TLS (``grpc.tls_client_ca_file``) a shard
presents its own certificate as the client's.  Admin calls forwarded to the owner of an image carry the
caller's own token instead (the owner checks it as if the caller had come to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from baseliner.protos.v1 import admin_pb2_grpc, shards_pb2_grpc
from baseliner.sensor.transport import channel_credentials, open_channel
from baseliner.service.auth import read_secret
from baseliner.service.config import ServeConfig

#: Metadata key of a forwarded call: how many shards it has been through (Admin calls; forwards stop there).
HOPS = "x-baseliner-shard-hops"
#: At most this many shards pass a call on (a second hop covers a map that changed under the first).
MAX_HOPS = 3


class Peers:
    """Channels to the other shards, by address (see the module docstring)."""

    def __init__(self, config: ServeConfig) -> None:
        g, sh = config.grpc, config.shards
        self._token = read_secret(sh.peer_token_file) if sh.peer_token_file else ""
        self._credentials: grpc.ChannelCredentials | None = None
        if g.tls_cert_file:
            mutual = bool(g.tls_client_ca_file)  # mutual TLS: present this shard's certificate
            self._credentials = channel_credentials(sh.tls_ca_file or None, g.tls_cert_file if mutual else None,
                                                    g.tls_key_file if mutual else None)
        self._options = [("grpc.max_receive_message_length", g.max_message_bytes),
                         ("grpc.max_send_message_length", g.max_message_bytes)]
        self._channels: dict[str, grpc.aio.Channel] = {}

    def metadata(self, extra: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
        """The peer token (when configured) and ``extra``."""
        auth = (("authorization", f"Bearer {self._token}"),) if self._token else ()
        return (*auth, *extra)

    def channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = open_channel(address, self._credentials, self._options)
        return ch

    def shards(self, address: str) -> Any:
        return shards_pb2_grpc.ShardsStub(self.channel(address))

    def admin(self, address: str) -> Any:
        return admin_pb2_grpc.AdminStub(self.channel(address))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
