"""Issue 15, case 9 (TLS): ``quiesce run`` against an etcd that speaks TLS only and asks for
client certificates (``--client-cert-auth``): with ``state.etcd.tls`` (CA, client certificate
and key) and an ``https://`` endpoint it starts and shares state; without a client
certificate, or trusting another CA, it does not start and says why."""

from __future__ import annotations

import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.store.test_cluster import cli, cluster
from tests.store.test_etcd import ETCD, Etcd, node_config
from tests.support.process import BackendThread, Started, run_quiesce, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]


class TlsEtcd(Etcd):
    """One etcd member whose client port speaks TLS only and wants a client certificate."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "data")
        self.ca = trustme.CA()
        self.files = root
        self.ca.cert_pem.write_to_path(str(root / "ca.pem"))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
        server.private_key_pem.write_to_path(str(root / "server.key"))
        client = self.ca.issue_cert("quiesce-node")
        client.cert_chain_pems[0].write_to_path(str(root / "client.pem"))
        client.private_key_pem.write_to_path(str(root / "client.key"))

    def start(self) -> None:
        c, p = f"https://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        f = self.files
        self.proc = subprocess.Popen(
            [
                *(ETCD, "--data-dir", str(self.data_dir), "--name", "default"),
                *("--listen-client-urls", c, "--advertise-client-urls", c),
                *("--listen-peer-urls", p, "--initial-advertise-peer-urls", p),
                *("--initial-cluster", f"default={p}"),
                *("--cert-file", str(f / "server.pem"), "--key-file", str(f / "server.key")),
                *("--trusted-ca-file", str(f / "ca.pem"), "--client-cert-auth"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        context = ssl.create_default_context(cafile=str(f / "ca.pem"))
        context.load_cert_chain(str(f / "client.pem"), str(f / "client.key"))
        self.wait_healthy(c, context)


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[TlsEtcd]:
    root = tmp_path / "etcd"
    root.mkdir()
    server = TlsEtcd(root)
    server.start()
    yield server
    server.stop()


def start(tmp_path: Path, etcd: TlsEtcd, name: str, port: int, tls: str) -> Started:
    d = tmp_path / name
    d.mkdir()
    head = node_config(etcd, f"/quiesce-tls/{uuid.uuid4().hex[:8]}/", name, tls)
    (d / "quiesce.yaml").write_text(
        head.replace('endpoints: ["', 'endpoints: ["https://')
        + f"pools:\n  web:\n    servers: [{{name: b1, address: 127.0.0.1:{port}}}]\n"
        + "services:\n  www: {listen: 127.0.0.1:0, pool: web}\n"
    )
    return run_quiesce(d)


def test_quiesce_run_over_tls_with_a_client_certificate(tmp_path: Path, tls_etcd: TlsEtcd) -> None:
    f = tls_etcd.files
    with BackendThread(["b1"]) as backends:
        port = backends.backends[0].port
        tls = f", tls: {{ca: {f / 'ca.pem'}, cert: {f / 'client.pem'}, key: {f / 'client.key'}}}"
        node = start(tmp_path, tls_etcd, "A", port, tls)
        try:
            until(lambda: cluster(node)["link"] == "up" and cluster(node)["nodes"], 10)
            cli(node, "set", "server", "web/b1", "maintenance")  # confirmed by etcd over TLS
        finally:
            node.proc.stop()
        # no client certificate: etcd closes the handshake
        with pytest.raises(AssertionError) as caught:
            start(tmp_path, tls_etcd, "B", port, f", tls: {{ca: {f / 'ca.pem'}}}")
        assert "the TLS handshake with etcd failed" in str(caught.value)
        assert "check state.etcd.tls (ca, and cert and key" in str(caught.value)
        # another CA: this node does not trust etcd's certificate
        other = trustme.CA()
        other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
        cert = f"cert: {f / 'client.pem'}, key: {f / 'client.key'}"
        bad = f", tls: {{ca: {tmp_path / 'other-ca.pem'}, {cert}}}"
        with pytest.raises(AssertionError) as caught:
            start(tmp_path, tls_etcd, "C", port, bad)
        assert "the TLS handshake with etcd failed" in str(caught.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
