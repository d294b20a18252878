"""`--web.config.file`: TLS for the metrics port, in the exporter-toolkit format Prometheus users know.

    tls_server_config:
      cert_file: /etc/tls/tls.crt        # relative paths are relative to this file
      key_file: /etc/tls/tls.key
      client_ca_file: /etc/tls/ca.crt    # optional: verify client certificates
      client_auth_type: RequireAndVerifyClientCert

The certificate and key are re-read when the files change (OpenShift's service CA rotates them).
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from .tls import TlsConfig, build_ssl_context

# exporter-toolkit's client_auth_type values that Python's ssl module can honour.
CLIENT_AUTH = {
    "NoClientCert": None,
    "VerifyClientCertIfGiven": False,
    "RequireAndVerifyClientCert": True,
}
TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}


class WebConfigError(ValueError):
    pass


def _resolve(base: str, path: Any, key: str) -> str:
    if not isinstance(path, str) or not path:
        raise WebConfigError(f"tls_server_config.{key} must be a file path")
    return path if os.path.isabs(path) else os.path.join(base, path)


def load_web_config(path: str) -> TlsConfig | None:
    """The TLS settings of a web config file, checked by loading them once; None without TLS."""
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except OSError as e:
        raise WebConfigError(f"cannot read {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise WebConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from e
    if document is None:
        return None
    if not isinstance(document, dict):
        raise WebConfigError(f"{path}: expected a mapping at the top level")
    unsupported = set(document) - {"tls_server_config"}
    if unsupported:
        raise WebConfigError(f"{path}: unsupported settings {sorted(unsupported)} (only tls_server_config)")
    tls = document.get("tls_server_config")
    if not tls:
        return None
    if not isinstance(tls, dict):
        raise WebConfigError(f"{path}: tls_server_config must be a mapping")
    unknown = set(tls) - TLS_KEYS
    if unknown:
        raise WebConfigError(f"{path}: unknown tls_server_config keys {sorted(unknown)}")
    if tls.get("min_version", "TLS12") != "TLS12":
        # The server's floor is TLS 1.2 and TLS 1.3 is negotiated whenever the client offers it.
        raise WebConfigError(f"{path}: min_version can only be TLS12 (TLS 1.3 is used when offered)")
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if auth_type not in CLIENT_AUTH:
        raise WebConfigError(f"{path}: client_auth_type {auth_type!r} unsupported: use one of {', '.join(CLIENT_AUTH)}")
    base = os.path.dirname(os.path.abspath(path))
    client_auth = CLIENT_AUTH[auth_type]
    client_ca = tls.get("client_ca_file")
    if client_auth is not None and not client_ca:
        raise WebConfigError(f"{path}: client_auth_type {auth_type} needs client_ca_file")
    config = TlsConfig(
        cert_file=_resolve(base, tls.get("cert_file"), "cert_file"),
        key_file=_resolve(base, tls.get("key_file"), "key_file"),
        client_ca_file=_resolve(base, client_ca, "client_ca_file") if client_ca else None,
        client_auth=bool(client_auth),
    )
    try:  # fail at start-up, with the file named, rather than on the first connection
        build_ssl_context(config)
    except (OSError, ValueError) as e:
        raise WebConfigError(f"{path}: cannot load the certificate or key: {e}") from e
    return config
