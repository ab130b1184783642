"""The exporter's ``--web-config FILE``: TLS and basic authentication in the Prometheus exporter-toolkit's file
format, so the file an operator already keeps for node_exporter serves this exporter too.

Read: ``tls_server_config`` (``cert_file``, ``key_file``, ``client_auth_type``, ``client_ca_file``,
``min_version``, ``max_version``), ``http_server_config.headers`` and ``basic_auth_users`` (bcrypt hashes).  A
key the toolkit knows but this exporter cannot honour is refused by name, never ignored: a TLS policy silently
dropped is a weaker server than the one configured.  Relative file names are taken from the config's directory,
as the toolkit does.  The config and every file it names are checked as ssh checks its keys (``xenevt.trust``).

The toolkit reads the file again for every request; here it is read again when it or a file it names changes
(checked per connection), and a change that does not parse closes connections until it is mended: a server never
keeps serving a policy its operator has replaced.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import sys
import threading
from dataclasses import dataclass, field

from ..errors import UsageError
from ..safetext import term
from ..trust import fingerprint, read_trusted

CONFIG_CAP = 1 << 20
PEM_CAP = 1 << 20
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
                "TLS13": ssl.TLSVersion.TLSv1_3}
# client_auth_type: the two that verify a client's certificate against client_ca_file (Python's ssl has no mode
# that asks for a certificate without verifying it, and the toolkit's own docs call those two insecure)
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
           "Strict-Transport-Security")
TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version")
# what the toolkit accepts and this exporter does not do: refused by name
UNSUPPORTED = {"cert": "give the certificate as cert_file", "key": "give the key as key_file",
               "client_ca": "give the CA as client_ca_file", "client_allowed_sans": "not supported",
               "cipher_suites": "not supported (Python's ssl keeps OpenSSL's defaults)",
               "prefer_server_cipher_suites": "not supported", "curve_preferences": "not supported",
               "http2": "not supported (HTTP/1.1 only)", "rate_limit": "not supported"}


def _key(key: object) -> str:
    """A key from the file, as an error may quote it: escaped, and cut (a key may be a megabyte long)."""
    text = term(str(key))
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(path: str, where: str, why: str) -> UsageError:
    return UsageError(f"--web-config {path}: {where}: {why}")


@dataclass
class WebConfig:
    """One parse of the file: the TLS context (or None: plain HTTP), the users, the headers, and the
    fingerprints of the files it was made from."""

    path: str
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple | None] = field(default_factory=dict)

    def changed(self) -> bool:
        return any(fingerprint(p) != fp for p, fp in self.files.items())


def load(path: str) -> WebConfig:
    """Parse and check ``path``; a bad file is one UsageError naming the file and the key."""
    try:
        import yaml
    except ImportError:
        raise UsageError("--web-config needs PyYAML: apt install python3-yaml, or pip install "
                         "'xenevt[exporter]'") from None
    files = {path: fingerprint(path)}
    raw = read_trusted(path, "--web-config", CONFIG_CAP, UsageError)
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # (libyaml where built with it: 10x faster)
        doc = yaml.load(raw, Loader=loader) if raw.strip() else {}  # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise _bad(path, where, _key(getattr(e, "problem", None) or e)) from None
    except (ValueError, OverflowError, RecursionError) as e:  # a value the YAML constructor cannot make (an
        raise _bad(path, "YAML", _key(e)) from None             # integer of 5,000 digits, nesting past the stack)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise _bad(path, "top level", "not a mapping of tls_server_config, http_server_config, basic_auth_users")
    for key in doc:
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users"):
            raise _bad(path, _key(key), "unknown key" + (" (not supported)" if key in UNSUPPORTED else ""))
    base = os.path.dirname(os.path.abspath(path))
    cfg = WebConfig(path, files=files)
    tls = _mapping(path, doc, "tls_server_config")
    if tls is not None:
        cfg.tls = _tls(path, base, tls, files)
    http = _mapping(path, doc, "http_server_config")
    if http is not None:
        for key in http:
            if key in UNSUPPORTED:
                raise _bad(path, f"http_server_config.{key}", UNSUPPORTED[key])
            if key != "headers":
                raise _bad(path, f"http_server_config.{_key(key)}", "unknown key")
        for name, value in (_mapping(path, http, "headers", "http_server_config.") or {}).items():
            if name not in HEADERS:
                raise _bad(path, f"http_server_config.headers.{_key(name)}", f"not one of {', '.join(HEADERS)}")
            if not isinstance(value, str) or any(c in value for c in "\r\n"):
                raise _bad(path, f"http_server_config.headers.{name}", "a one-line string is wanted")
            if value:
                cfg.headers[name] = value
    users = _mapping(path, doc, "basic_auth_users")
    for user, hashed in (users or {}).items():
        where = f"basic_auth_users.{_key(user)}"
        if not isinstance(user, str) or not user or ":" in user:
            raise _bad(path, where, "a user name without ':' is wanted")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
            raise _bad(path, where, "not a bcrypt hash ($2y$10$… as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)")
        cfg.users[user] = hashed.encode()
    if cfg.users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise UsageError("--web-config: basic_auth_users need bcrypt: apt install python3-bcrypt, or pip "
                             "install 'xenevt[exporter]'") from None
    return cfg


def _mapping(path: str, doc: dict, key: str, prefix: str = "") -> dict | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(path, prefix + key, "a mapping is wanted")
    return value


def _tls(path: str, base: str, tls: dict, files: dict) -> ssl.SSLContext:
    for key in tls:
        if key in UNSUPPORTED:
            raise _bad(path, f"tls_server_config.{key}", UNSUPPORTED[key])
        if key not in TLS_KEYS:
            raise _bad(path, f"tls_server_config.{_key(key)}", "unknown key")
    for key in TLS_KEYS:
        if key in tls and not isinstance(tls[key], str):
            raise _bad(path, f"tls_server_config.{key}", "a string is wanted")
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise _bad(path, "tls_server_config", "cert_file and key_file are both needed")

    def named(key: str) -> str:
        p = os.path.join(base, tls[key])
        files[p] = fingerprint(p)
        return p

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = []
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = tls.get(key, default)
        if name not in TLS_VERSIONS:
            raise _bad(path, f"tls_server_config.{key}", f"{_key(name)!r} is not one of {', '.join(TLS_VERSIONS)}")
        versions.append(TLS_VERSIONS[name])
    if versions[0] > versions[1]:
        raise _bad(path, "tls_server_config.min_version", "above max_version")
    try:
        ctx.minimum_version, ctx.maximum_version = versions
    except (ValueError, ssl.SSLError) as e:
        raise _bad(path, "tls_server_config.min_version", f"this OpenSSL refuses it ({e})") from None
    cert, key = named("cert_file"), named("key_file")
    pems = {}
    for what, p, secret in (("cert_file", cert, False), ("key_file", key, True)):
        pems[what] = read_trusted(p, f"--web-config {path}: tls_server_config.{what}", PEM_CAP, UsageError,
                                  secret=secret)
    _load_chain(path, ctx, pems["cert_file"], pems["key_file"])
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        why = ("asks for a certificate it does not verify: not supported (use RequireAndVerifyClientCert)"
               if auth in ("RequestClientCert", "RequireAnyClientCert") else
               f"not one of {', '.join(CLIENT_AUTH)}")
        raise _bad(path, "tls_server_config.client_auth_type", f"{_key(auth)!r} {why}")
    ctx.verify_mode = CLIENT_AUTH[auth]
    if auth != "NoClientCert":
        if not tls.get("client_ca_file"):
            raise _bad(path, "tls_server_config.client_ca_file", f"needed by client_auth_type {auth}")
        ca = named("client_ca_file")
        pem = read_trusted(ca, f"--web-config {path}: tls_server_config.client_ca_file", PEM_CAP, UsageError)
        try:
            ctx.load_verify_locations(cadata=pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as e:
            raise _bad(path, "tls_server_config.client_ca_file", f"not a PEM certificate ({e})") from None
    elif tls.get("client_ca_file"):
        raise _bad(path, "tls_server_config.client_ca_file", "given with client_auth_type NoClientCert: unused")
    return ctx


def _load_chain(path: str, ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads a chain from files only: the checked bytes go through a private anonymous file, so what is
    loaded is what was checked (no second open of the user's path)."""
    fd = os.memfd_create("xenevt-web-config", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert + b"\n" + key)
        try:
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        except ssl.SSLError as e:
            raise _bad(path, "tls_server_config", f"cert_file and key_file do not make a key pair ({e.reason})") \
                from None
    finally:
        os.close(fd)


class Guard:
    """The current config for each connection: the TLS wrap, the basic-auth check (bcrypt, each right password
    remembered by its SHA-256 so a scrape every 15 s costs one hash, as the toolkit caches), the headers."""

    def __init__(self, cfg: WebConfig):
        self._cfg: WebConfig | None = cfg
        self._path = cfg.path
        self._lock = threading.Lock()
        self._good: set[tuple[str, bytes]] = set()

    def current(self) -> WebConfig | None:
        """The config to serve with, read again if a file changed; None while a changed file does not load."""
        with self._lock:
            cfg = self._cfg
            if cfg is not None and not cfg.changed():
                return cfg
            try:
                new = load(self._path)
            except UsageError as e:
                if cfg is not None:  # (said once per change)
                    print(f"xenevt: exporter: {e}; refusing connections until it loads", file=sys.stderr, flush=True)
                self._cfg = None
                return None
            if cfg is None:
                print(f"xenevt: exporter: --web-config {self._path} loads again", file=sys.stderr, flush=True)
            self._cfg, self._good = new, set()
            return new

    def allowed(self, cfg: WebConfig, header: str | None) -> bool:
        if not cfg.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = cfg.users.get(user)
        if hashed is None:
            return False
        digest = hashlib.sha256(password.encode()).digest()
        with self._lock:
            if (user, digest) in self._good:
                return True
        import bcrypt

        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                if self._cfg is cfg:
                    self._good.add((user, digest))
        return ok
