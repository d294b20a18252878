"""TLS for the metrics port: the server context for a certificate pair, re-read when the files change.

OpenShift's service CA rotates the certificate in place; a new pair is picked up on the next
connection after `reload_interval`, and a broken new pair keeps the old one (logged once).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass

log = logging.getLogger("ebs_exporter.http")


@dataclass(frozen=True)
class TlsConfig:
    """Certificate and key (PEM); with `client_ca_file`, client certificates signed by that CA are
    verified when presented, and required when `client_auth` is true. The files are checked for
    changes at most every `reload_interval` seconds, when a connection arrives."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_auth: bool = False
    reload_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.client_auth and not self.client_ca_file:
            raise ValueError("client_auth needs client_ca_file (the CA that signs client certificates)")
        if self.reload_interval < 0:
            raise ValueError("reload_interval must not be negative")


def build_ssl_context(config: TlsConfig) -> ssl.SSLContext:
    """A server context for `config` (TLS 1.2 or newer). Raises OSError (ssl.SSLError,
    FileNotFoundError ...) when the files cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(config.cert_file, config.key_file)
    if config.client_ca_file:
        ctx.load_verify_locations(cafile=config.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if config.client_auth else ssl.CERT_OPTIONAL
    return ctx


_Signature = tuple[tuple[int, int, int, int], ...]


class ReloadingContext:
    """The newest good context for a TlsConfig, rebuilt when the files' identity changes.
    Raises OSError at construction when the files cannot be loaded."""

    def __init__(self, config: TlsConfig) -> None:
        self._config = config
        self._paths = [p for p in (config.cert_file, config.key_file, config.client_ca_file) if p]
        self._signature = self._stat()
        self._context = build_ssl_context(config)
        self._rejected: _Signature | None = None
        self._next_check = time.monotonic() + config.reload_interval

    def _stat(self) -> _Signature:
        out = []
        for path in self._paths:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now < self._next_check:
            return self._context
        self._next_check = now + self._config.reload_interval
        try:
            signature = self._stat()
        except OSError as exc:
            if self._rejected != ():
                log.error("TLS files unreadable, keeping the current certificate: %s", exc)
                self._rejected = ()
            return self._context
        if signature in (self._signature, self._rejected):
            return self._context
        try:
            context = build_ssl_context(self._config)
        except (OSError, ValueError) as exc:
            log.error("new TLS certificate or key rejected, keeping the current one: %s", exc)
            self._rejected = signature
            return self._context
        log.info("TLS certificate reloaded from %s", self._config.cert_file)
        self._context, self._signature, self._rejected = context, signature, None
        return context
