"""With --security, each client connection is held to what the endpoints offer.

asyncua starts every connection on a None policy and keeps it when a client asks for None, even
when no None endpoint is offered; such a channel carries no role checks at all. And its user
check is synchronous, so a scrypt hash (~36 ms) would stall the event loop on every login. So each
connection's message processor is guarded here:

- OpenSecureChannel only for an offered (policy, mode), or for None, which OPC UA keeps open for
  discovery (Part 4, 5.4): on a None channel nothing but GetEndpoints and FindServers is served
  when None is not offered. Anything else gets an OPC UA Error message
  (BadSecurityPolicyRejected), the connection is closed and the attempt audited.
- ActivateSession: a user name token must be encrypted (by the token's own algorithm, or by a
  SignAndEncrypt channel); its password is checked in a worker thread; failures from one client
  address back off (LoginBackoff); anonymous attempts are refused and audited.

asyncua has no hook for new connections; connections.py makes one, and tells the guard of each
connection as it arrives (once its processor exists).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.security_policies import SECURITY_POLICY_TYPE_MAP, SecurityPolicyNone
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary

from bridge.limits import clip
from bridge.opcua import asyncua_seams
from bridge.opcua.connections import ClientConnections, peer_of
from bridge.security.pki import AuditHook
from bridge.security.rules import Channel, current_channel
from bridge.security.users import RoleUserManager, checked_login

log = structlog.get_logger(__name__)


_ACTIVATE = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
_DISCOVERY = {
    ua.NodeId(ua.ObjectIds.FindServersRequest_Encoding_DefaultBinary),
    ua.NodeId(ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary),
}
_NONE = (SecurityPolicyNone.URI, ua.MessageSecurityMode.None_)


ADDRESS_FREE_FAILURES = 20  # failed logins from one address, any user names, before it backs off


class LoginBackoff:
    """Failed logins from one client address back off: the first `free` failures cost nothing,
    then each further one doubles the wait before the next attempt is even checked (up to
    `max_s`). A success clears the address. At most `max_addresses` are remembered."""

    def __init__(
        self,
        *,
        free: int = 3,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.initial_s, self.max_s = free, initial_s, max_s
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # count, blocked until

    def wait_s(self, address: str) -> float:
        _, until = self._failures.get(address, (0, 0.0))
        return max(0.0, until - self._clock())

    def failed(self, address: str) -> None:
        count = self._failures.pop(address, (0, 0.0))[0] + 1
        over = count - self.free
        wait = 0.0 if over <= 0 else min(self.max_s, self.initial_s * 2 ** min(over - 1, 30))
        self._failures[address] = (count, self._clock() + wait)
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def offered(policies: list[ua.SecurityPolicyType]) -> frozenset[tuple[str, ua.MessageSecurityMode]]:
    """The (policy URI, mode) pairs a client may open a channel with."""
    return frozenset((SECURITY_POLICY_TYPE_MAP[p][0].URI, SECURITY_POLICY_TYPE_MAP[p][1]) for p in policies)


def _policy_name(uri: str) -> str:
    return uri.rsplit("#", 1)[-1] or "?"


def _channel(policy_uri: str, mode: ua.MessageSecurityMode, client: str) -> Channel:
    return Channel(_policy_name(policy_uri), mode.name.rstrip("_"), client)


def tag_channels(connections: ClientConnections) -> None:
    """Without --security nothing is guarded, but each request still carries its client's address
    (`current_channel`, policy None): the audit then says which host submitted an order, and the
    per-client limits (open orders, sessions, the refusal tally) tell anonymous clients apart."""

    def attach(transport: Any) -> None:
        channel = _channel(SecurityPolicyNone.URI, ua.MessageSecurityMode.None_, peer_of(transport)[1])

        async def tagged(process: Callable[..., Awaitable[Any]], *request: Any) -> Any:
            current_channel.set(channel)
            return await process(*request)

        asyncua_seams.hook_process_message(
            transport.get_protocol().processor, lambda process: functools.partial(tagged, process)
        )

    connections.watch(attach)


class ChannelGuard:
    def __init__(
        self,
        server: Server,
        policies: list[ua.SecurityPolicyType],
        users: RoleUserManager,
        audit: AuditHook,
        backoff: LoginBackoff,
    ) -> None:
        self._server = server
        self._offered = offered(policies)
        self._users = users
        self._audit = audit
        self.backoff = backoff
        self.address_backoff = LoginBackoff(
            free=ADDRESS_FREE_FAILURES, initial_s=backoff.initial_s, max_s=backoff.max_s
        )

    def install(self, connections: ClientConnections) -> None:
        """Guard every connection from now on (`connections` tells of each); call before the server
        starts listening. Fails closed: if asyncua no longer has a name the guard hooks, the server
        does not start (asyncua_seams.check), since an unguarded `--security` server would serve
        the None channel."""
        asyncua_seams.check(self._server, secured=True)
        connections.watch(self.attach)

    def attach(self, transport: Any) -> None:
        processor = transport.get_protocol().processor
        address, client = peer_of(transport)
        open_channel, connection = (
            processor.open_secure_channel,
            asyncua_seams.processor_connection(processor),
        )

        def guarded_open(algohdr: Any, seqhdr: Any, body: Any) -> None:
            if not connection.is_open():
                request = struct_from_binary(ua.OpenSecureChannelRequest, body.copy())
                wanted = (algohdr.SecurityPolicyURI, request.Parameters.SecurityMode)
                if wanted not in self._offered and wanted != _NONE:
                    self._refuse_channel(transport, client, wanted, "is not offered")
                    return
            open_channel(algohdr, seqhdr, body)

        def guard(process: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            return functools.partial(guarded_process, process)

        async def guarded_process(
            process: Callable[..., Awaitable[Any]], typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any
        ) -> Any:
            policy = connection.security_policy
            channel = _channel(policy.URI, policy.Mode, client)
            current_channel.set(channel)
            if typeid not in _DISCOVERY and (
                (policy.URI, policy.Mode) not in self._offered or policy.permissions is None
            ):
                what = ua.ObjectIdNames.get(typeid.Identifier, "?").removesuffix(
                    "Request_Encoding_DefaultBinary"
                )
                self._refuse_channel(
                    transport, client, (policy.URI, policy.Mode), f"serves discovery only ({what})"
                )
                return True
            if typeid == _ACTIVATE:
                request = (typeid, requesthdr, seqhdr, body)
                return await self._activate(processor, channel, address, process, request)
            return await process(typeid, requesthdr, seqhdr, body)

        processor.open_secure_channel = guarded_open
        asyncua_seams.hook_process_message(processor, guard)

    def _refuse_channel(self, transport: Any, client: str, wanted: tuple[str, Any], why: str) -> None:
        reason = f"security policy {_policy_name(wanted[0])} with mode {wanted[1].name.rstrip('_')} {why}"
        log.warning("opcua_channel_refused", client=client, reason=reason)
        self._audit("channel", "", "", f"refused from {client}: {reason}")
        error = ua.ErrorMessage(ua.StatusCode(ua.StatusCodes.BadSecurityPolicyRejected), reason)
        transport.write(uatcp_to_binary(ua.MessageType.Error, error))
        transport.close()

    async def _activate(
        self, processor: Any, channel: Channel, address: str, process: Any, request: tuple[Any, ...]
    ) -> Any:
        token = struct_from_binary(ua.ActivateSessionParameters, request[3].copy()).UserIdentityToken
        user = getattr(token, "UserName", None) or ""
        if not isinstance(token, ua.UserNameIdentityToken | ua.X509IdentityToken):
            self._audit("login", "", "", f"refused: {type(token).__name__} (anonymous access is off)")
            raise ServiceError(ua.StatusCodes.BadIdentityTokenRejected)
        # per user and address, and per address with more room: one guesser's failures slow it,
        # not another user at the same address (a shared HMI PC, NAT), unless it guesses a lot
        buckets = ((self.backoff, f"{user}@{address}"), (self.address_backoff, address))
        wait = max(backoff.wait_s(bucket) for backoff, bucket in buckets)
        if wait > 0:
            reason = f"refused: failed logins as {clip(user, 64)!r} from {address}; next try in {wait:.1f} s"
            self._audit("login", user, "", reason)
            raise ServiceError(ua.StatusCodes.BadUserAccessDenied)
        verdict = None
        if isinstance(token, ua.UserNameIdentityToken):
            if not token.EncryptionAlgorithm and channel.mode != ua.MessageSecurityMode.SignAndEncrypt.name:
                reason = f"refused: password sent in clear on a {channel.mode} channel"
                self._audit("login", user, "", reason)
                raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid)
            verdict = await self._check_password(processor, token)
        reset = checked_login.set(verdict)
        try:
            result = await process(*request)
        except (ServiceError, ua.UaStatusCodeError):
            for backoff, bucket in buckets:
                backoff.failed(bucket)
            raise
        finally:
            checked_login.reset(reset)
        for backoff, bucket in buckets:
            backoff.succeeded(bucket)
        return result

    async def _check_password(self, processor: Any, token: ua.UserNameIdentityToken) -> Any:
        """The user check's verdict, computed in a worker thread (None: leave it to asyncua)."""
        if processor.session is None:
            return None
        try:
            username, password = self._server.iserver.decrypt_user_token(processor.session, token)
        except Exception:  # asyncua refuses the token itself, with its own status
            return None
        return await asyncio.to_thread(self._users.check_password, username, password)
