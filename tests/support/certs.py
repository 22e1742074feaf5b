"""Certificates for TLS tests: a trustme CA and leaf certificates written as PEM files.

``Certs(tmp_path)`` makes one CA; :meth:`Certs.leaf` writes a certificate (its chain
included) and its key for some names and returns their paths; ``ca_file`` is the CA for
clients (curl ``--cacert``, httpx ``verify=``) and for ``client_ca``/``ca`` settings.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class Certs:
    def __init__(self, directory: Path, key_type: trustme.KeyType = trustme.KeyType.ECDSA) -> None:
        self.dir = directory
        self.key_type = key_type
        self.ca = trustme.CA(key_type=key_type)
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def leaf(
        self,
        stem: str,
        *names: str,
        not_after: datetime.datetime | None = None,
        common_name: str | None = None,
    ) -> tuple[Path, Path]:
        """``stem``.pem (certificate and chain) and ``stem``.key, for ``names``; with no
        names, a certificate with only a subject CN (``common_name``) and no SAN at all."""
        if not names:
            return self._cn_only(stem, common_name or stem, not_after)
        cert = self.ca.issue_cert(
            *names, common_name=common_name, not_after=not_after, key_type=self.key_type
        )
        cert_file, key_file = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        with cert_file.open("wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        cert.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file

    def _cn_only(
        self, stem: str, common_name: str, not_after: datetime.datetime | None
    ) -> tuple[Path, Path]:
        # trustme always writes a SAN extension, and cryptography >= 51 refuses an empty one:
        # a legacy CN-only certificate is signed here with the CA's key instead.
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=365))
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        cert_file, key_file = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        cert_file.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM) + self.ca.cert_pem.bytes()
        )
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file
