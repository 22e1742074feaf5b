"""Certificates for TLS tests: a trustme CA and leaf certificates written as PEM files.

``Certs(tmp_path)`` makes one CA; :meth:`Certs.leaf` writes a certificate (its chain
included) and its key for some names and returns their paths; ``ca_file`` is the CA for
clients (curl ``--cacert``, httpx ``verify=``) and for ``client_ca``/``ca`` settings.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme


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
        """``stem``.pem (certificate and chain) and ``stem``.key, for ``names``."""
        cert = self.ca.issue_cert(
            *names, common_name=common_name, not_after=not_after, key_type=self.key_type
        )
        cert_file, key_file = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        with cert_file.open("wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        cert.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file
