"""SNMP requests to one device over one connected UDP socket, without pysnmp: the socket and
request matching (:class:`DatagramSession`, also under v3's :class:`agent.inputs.snmp.usm.UsmSession`)
and v1/v2c with a community (:class:`CommunitySession`).

The socket is opened on the first request (per event loop) and kept for every later poll, so a
poll costs no engine, transport or socket set-up. Being connected, it only receives datagrams
from the device's address and port, and an ICMP "port unreachable" or "host unreachable" makes
a request that got no answer fail with ``unreachable`` instead of ``timeout`` (after the same
retries: a booting device refuses for a while). Answers are matched by request-id; a datagram for
no pending request is dropped after reading its header only, and a malformed answer to a pending
one ends it with ``error`` naming what was wrong.
"""
from __future__ import annotations

import asyncio
import random
import socket
from typing import Dict, Optional, Sequence

from agent.inputs.snmp.ber import GETBULK, BerError, Oid, Response, decode_header, decode_response, \
    encode_request
from agent.inputs.snmp.errors import SnmpError


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: "DatagramSession"):
        self.session = session

    def datagram_received(self, data: bytes, addr) -> None:
        self.session._received(data)

    def error_received(self, exc: Exception) -> None:
        self.session._failed(exc)


class DatagramSession:
    """One kept, connected UDP socket to ``address:port`` and the requests pending on it, matched
    by a key a subclass reads from each datagram (:meth:`_match`) before decoding it
    (:meth:`_decode`; ``None`` drops a datagram, the request keeps waiting)."""

    def __init__(self, address: str, port: int, *, timeout: float, retries: int):
        self.address = address
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._transport: Optional[asyncio.DatagramTransport] = None
        self._pending: Dict[int, asyncio.Future] = {}
        self._icmp_error: Optional[str] = None

    def _where(self) -> str:
        return f"{self.address}:{self.port}"

    async def _open(self) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        if self._transport is not None and self._loop is loop and not self._transport.is_closing():
            return self._transport
        self.close()
        try:
            infos = await loop.getaddrinfo(self.address, self.port, type=socket.SOCK_DGRAM)
            family, _type, _proto, _name, sockaddr = infos[0]
            transport, _p = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), remote_addr=sockaddr[:2], family=family)
        except OSError as exc:
            raise SnmpError("unreachable", f"cannot reach {self._where()}: {exc.strerror or exc}") from None
        self._loop, self._transport = loop, transport
        return transport

    def _match(self, data: bytes) -> int:
        raise NotImplementedError

    def _decode(self, data: bytes, key: int) -> object:
        raise NotImplementedError

    def _received(self, data: bytes) -> None:
        try:
            key = self._match(data)
        except BerError:
            return  # not even an SNMP message of ours: nothing to match it with
        future = self._pending.get(key)
        if future is None or future.done():
            return
        try:
            result = self._decode(data, key)
        except BerError as exc:
            future.set_exception(SnmpError("error", f"{self._where()}: malformed answer: {exc}"))
        except SnmpError as exc:
            future.set_exception(exc)
        else:
            if result is not None:
                future.set_result(result)

    def _failed(self, exc: Exception) -> None:
        self._icmp_error = getattr(exc, "strerror", None) or str(exc)

    async def _exchange(self, key: int, message: bytes, retries: Optional[int] = None) -> object:
        """Send ``message`` until the answer matching ``key`` is decoded; the same bytes are re-sent
        on each retry, so a late answer counts."""
        transport = await self._open()
        tries = (self.retries if retries is None else retries) + 1
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self._icmp_error = None
        try:
            for _attempt in range(tries):
                transport.sendto(message)
                await asyncio.wait((future,), timeout=self.timeout)
                if future.done():
                    return future.result()
            if self._icmp_error:  # e.g. port unreachable: still retried, a device may be booting
                raise SnmpError("unreachable", f"{self._where()}: {self._icmp_error} ({tries} tries)")
            raise SnmpError("timeout", f"{self._where()}: no answer within {self.timeout:g}s "
                                       f"({tries} tries){self._timeout_note()}")
        finally:
            del self._pending[key]
            if not future.done():
                future.cancel()

    def _timeout_note(self) -> str:
        return ""

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.close()
            except RuntimeError:  # its event loop is already closed
                pass


class CommunitySession(DatagramSession):
    """Requests with a community (``version`` 0 = v1, 1 = v2c) to ``address:port``."""

    def __init__(self, address: str, port: int, version: int, community: str, *, timeout: float,
                 retries: int):
        super().__init__(address, port, timeout=timeout, retries=retries)
        self.version = version
        # Never printed: only ever put on the wire. UTF-8 like net-snmp's command-line tools.
        self._community = community.encode("utf-8")
        self._next_id = random.getrandbits(31)

    def _match(self, data: bytes) -> int:
        version, _community, _pdu, request_id, _pos = decode_header(data)
        return request_id if version == self.version else -1

    def _decode(self, data: bytes, key: int) -> Response:
        return decode_response(data)

    async def request(self, pdu: int, oids: Sequence[Oid], non_repeaters: int = 0,
                      max_repetitions: int = 0) -> Response:
        """One request; the same request-id is re-sent on each retry, so a late answer counts."""
        request_id = self._next_id
        self._next_id = (request_id + 1) & 0x7FFFFFFF
        message = encode_request(self.version, self._community, pdu, request_id, oids,
                                 non_repeaters, max_repetitions if pdu == GETBULK else 0)
        return await self._exchange(request_id, message)
