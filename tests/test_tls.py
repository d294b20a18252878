"""--web.config.file: the exporter over HTTPS (and mTLS), unblocked by a client that never says hello."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from exporter_harness import Exporter


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
    )
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(d / f"{name}.ext"),
            "-out",
            str(d / f"{name}.crt"),
        )
    return d


def _config(pki: Path, extra: str = "") -> Path:
    path = pki / f"web-{abs(hash(extra))}.yml"
    # relative paths: resolved against the config file's directory
    path.write_text(f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}")
    return path


def _context(pki: Path, client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client:
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return ctx


def _get(port: int, ctx: ssl.SSLContext) -> bytes:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=10) as r:
        return bytes(r.read())


def test_https_scrape_with_a_silent_client_holding_a_connection(pki: Path) -> None:
    with Exporter(["--simulate", "2", f"--web.config.file={_config(pki)}"]) as running:
        silent = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(5)]  # no ClientHello
        try:
            for _ in range(3):
                assert b"ebs_read_ops_total" in _get(running.port, _context(pki))
        finally:
            for s in silent:
                s.close()
        with pytest.raises((ConnectionError, OSError)):  # plain HTTP is not answered as metrics
            urllib.request.urlopen(f"http://127.0.0.1:{running.port}/metrics", timeout=5).read()
        assert any("https" in line for line in running.log)


def test_mtls_requires_a_client_certificate(pki: Path) -> None:
    extra = "  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
    with Exporter(["--simulate", "1", f"--web.config.file={_config(pki, extra)}"]) as running:
        assert b"ebs_read_ops_total" in _get(running.port, _context(pki, client=True))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _get(running.port, _context(pki))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n", "cannot load"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  colour: blue\n", "unknown"),
        ("basic_auth_users:\n  admin: x\n", "unsupported settings"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        ("tls_server_config: [\n", "not valid YAML"),
    ],
)
def test_bad_web_config_is_one_line_and_exit_2(pki: Path, content: str, message: str) -> None:
    path = pki / "bad.yml"
    path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "ebs_exporter", "--simulate", "1", f"--web.config.file={path}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
