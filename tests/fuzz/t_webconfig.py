"""Fuzz target: the exporter's --web-config reader (YAML, then every key checked), on a file in a private folder."""

from __future__ import annotations

import os
import tempfile

from .harness import target

_DIR = tempfile.mkdtemp(prefix="xenevt-fuzz-web-")  # (0700, ours: the trust rule passes, the parse is what is fuzzed)
_PATH = os.path.join(_DIR, "web.yml")


def _seeds() -> list[bytes]:
    h = b"$2b$04$" + b"a" * 53
    return [b"basic_auth_users:\n  alice: '" + h + b"'\n",
            b"http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            b"tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: k.pem\n  min_version: TLS12\n",
            b"tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireAndVerifyClientCert}\n",
            b"a: &x [1, 2]\nb: [*x, *x]\n", b"", b"---\n...\n"]


_TOKENS = [b"tls_server_config", b"http_server_config", b"basic_auth_users", b"headers", b"cert_file",
           b"key_file", b"client_auth_type", b"client_ca_file", b"min_version", b"max_version", b"TLS13",
           b"&a ", b"*a", b"!!python/object:os.system", b"? ", b"{", b"[", b": ", b"\n  ", b"'", b'"', b"|\n", b"\t"]


@target("webconfig", _seeds(), tokens=_TOKENS, memory_limit=256 << 20)
def run(data: bytes) -> None:
    from xenevt.metrics.webconfig import load

    with open(_PATH, "wb") as f:
        f.write(data)
    load(_PATH)
