"""A throwaway OpenLDAP ``slapd`` for tests: own config, own mdb database, own CA.

``SlapdServer.start(workdir)`` writes a ``slapd.conf`` (core/cosine/nis/inetorgperson schemas,
mdb database, memberof overlay, TLS with a CA made here), starts Debian's ``slapd`` listening on
``ldap://`` and ``ldaps://`` on free loopback ports, then loads the directory online (so the
memberof overlay fills ``memberOf``). Everything lives in ``workdir``, so pytest-xdist workers
never share anything. Needs ``slapd`` (``scripts/install-test-services``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ldap3 import Connection, Server

INSTALL_HINT = "run `sudo scripts/install-test-services` (installs slapd, ldap-utils and the OIDC provider)"
SLAPD_CANDIDATES = ("slapd", "/usr/sbin/slapd")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

BASE_DN = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret"
SERVICE_DN = f"cn=condavault,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "service-secret"
PEOPLE_DN = f"ou=people,{BASE_DN}"
GROUPS_DN = f"ou=groups,{BASE_DN}"


@dataclass(frozen=True)
class LdapUser:
    uid: str
    password: str
    mail: str
    cn: str

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE_DN}"


USERS = (
    LdapUser("alice", "alice-pw", "alice@example.org", "Alice Liddell"),
    LdapUser("bob", "bob-pw", "bob@example.org", "Bob Builder"),
    LdapUser("carol", "carol-pw", "carol@example.org", "Carol Danvers"),
)
# groupOfNames (member DNs) and posixGroup (memberUid) groups
NAMED_GROUPS = {"developers": ("alice", "bob"), "admins": ("alice",)}
POSIX_GROUPS = {"sysops": (2001, ("alice", "carol"))}


def find_slapd() -> str | None:
    """Path of the slapd binary, or None."""
    for candidate in SLAPD_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ssha(password: str) -> str:
    """RFC 2307 ``{SSHA}`` hash as OpenLDAP stores it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A throwaway CA and a server certificate for ``host`` (and ``localhost``) signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "condavault test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.server_key.chmod(0o600)
    return files


def slapd_conf(workdir: Path, tls: TlsFiles) -> str:
    schemas = "\n".join(f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "nis", "inetorgperson"))
    return f"""{schemas}
pidfile {workdir / "slapd.pid"}
argsfile {workdir / "slapd.args"}
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload memberof
password-hash {{SSHA}}
# Accept "unauthenticated binds" (a DN with an empty password -> anonymous), as Active Directory
# and many older directories do, so the tests prove the backend refuses empty passwords itself.
allow bind_anon_dn
TLSCACertificateFile {tls.ca_cert}
TLSCertificateFile {tls.server_cert}
TLSCertificateKeyFile {tls.server_key}

database mdb
maxsize 16777216
suffix "{BASE_DN}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {workdir / "db"}
index objectClass eq
index uid,cn,member,memberUid,uniqueMember eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
"""


@dataclass
class SlapdServer:
    """A running slapd; ``stop()`` kills it."""

    workdir: Path
    tls: TlsFiles
    ldap_port: int = 0
    ldaps_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    users: tuple[LdapUser, ...] = USERS
    log_path: Path = field(init=False)

    base_dn = BASE_DN
    admin_dn = ADMIN_DN
    admin_password = ADMIN_PASSWORD
    service_dn = SERVICE_DN
    service_password = SERVICE_PASSWORD
    people_dn = PEOPLE_DN
    groups_dn = GROUPS_DN

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @classmethod
    def start(cls, workdir: Path, slapd: str, attempts: int = 5) -> SlapdServer:
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir=workdir, tls=make_tls(workdir))
        server.log_path = workdir / "slapd.log"
        conf = workdir / "slapd.conf"
        conf.write_text(slapd_conf(workdir, server.tls))
        (workdir / "db").mkdir(exist_ok=True)
        for _ in range(attempts):  # a free port can be taken between probe and bind: retry
            server.ldap_port, server.ldaps_port = free_port(), free_port()
            if server._launch(slapd, conf):
                server._load()
                return server
        raise RuntimeError(f"slapd did not start; log:\n{server.log_path.read_text()}")

    def _launch(self, slapd: str, conf: Path, timeout: float = 10.0) -> bool:
        urls = f"{self.ldap_url}/ {self.ldaps_url}/"
        log = self.log_path.open("ab")
        # -d 0: stay in the foreground (no fork) so the fixture owns the process
        self.process = subprocess.Popen(
            [slapd, "-f", str(conf), "-h", urls, "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _port_open(self.ldap_port) and _port_open(self.ldaps_port):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def _load(self) -> None:
        conn = Connection(Server(self.ldap_url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
        try:
            for dn, attrs in _directory_entries(self.users):
                if not conn.add(dn, attributes=attrs):
                    raise RuntimeError(f"cannot add {dn}: {conn.result}")
        finally:
            conn.unbind()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _directory_entries(users: tuple[LdapUser, ...]) -> list[tuple[str, dict[str, object]]]:
    by_uid = {u.uid: u for u in users}
    entries: list[tuple[str, dict[str, object]]] = [
        (BASE_DN, {"objectClass": ["dcObject", "organization"], "dc": "example", "o": "Example"}),
        (PEOPLE_DN, {"objectClass": ["organizationalUnit"], "ou": "people"}),
        (GROUPS_DN, {"objectClass": ["organizationalUnit"], "ou": "groups"}),
        (f"ou=services,{BASE_DN}", {"objectClass": ["organizationalUnit"], "ou": "services"}),
        (
            SERVICE_DN,
            {
                "objectClass": ["organizationalRole", "simpleSecurityObject"],
                "cn": "condavault",
                "userPassword": ssha(SERVICE_PASSWORD),
            },
        ),
    ]
    for n, user in enumerate(users):
        entries.append(
            (
                user.dn,
                {
                    "objectClass": ["inetOrgPerson", "posixAccount"],
                    "uid": user.uid,
                    "cn": user.cn,
                    "sn": user.cn.split()[-1],
                    "mail": user.mail,
                    "uidNumber": str(1000 + n),
                    "gidNumber": "1000",
                    "homeDirectory": f"/home/{user.uid}",
                    "userPassword": ssha(user.password),
                },
            )
        )
    for name, members in NAMED_GROUPS.items():
        entries.append(
            (
                f"cn={name},{GROUPS_DN}",
                {"objectClass": ["groupOfNames"], "cn": name, "member": [by_uid[m].dn for m in members]},
            )
        )
    for name, (gid, members) in POSIX_GROUPS.items():
        entries.append(
            (
                f"cn={name},{GROUPS_DN}",
                {"objectClass": ["posixGroup"], "cn": name, "gidNumber": str(gid), "memberUid": list(members)},
            )
        )
    return entries
