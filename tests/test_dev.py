"""`idp dev`, run as a newcomer runs it (a real process in a fresh directory), on free ports:
it owns the demo agencies it starts, and a port it cannot have stops it at once."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from .helpers import free_port


def dev_env(provider_port: int) -> dict:
    """A shell's environment with the provider moved off 5000, as [server] settings allow."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "IDP_SERVER_BIND": f"127.0.0.1:{provider_port}", "IDP_SERVER_ISSUER": f"http://127.0.0.1:{provider_port}"}


def idp_dev(tmp_path, provider_port: int, agency_ports: tuple[int, int], **popen) -> subprocess.Popen:
    """`idp dev` in a fresh directory (its instance/ and keys/ land there)."""
    return subprocess.Popen([sys.executable, "-m", "idp.cli", "dev", "--agency-ports", ",".join(map(str, agency_ports))],
                            env=dev_env(provider_port), cwd=tmp_path, stdin=subprocess.DEVNULL, **popen)


def answers(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2, allow_redirects=False)
    except requests.ConnectionError:
        return None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_idp_dev_stops_its_demo_agencies(tmp_path, signum):
    provider_port, agency_ports = free_port(), (free_port(), free_port())
    with open(tmp_path / "console.log", "w") as console:
        proc = idp_dev(tmp_path, provider_port, agency_ports, stdout=console, stderr=subprocess.STDOUT)
    try:
        urls = [f"http://127.0.0.1:{provider_port}/.well-known/openid-configuration",
                f"http://127.0.0.1:{agency_ports[0]}/", f"http://localhost:{agency_ports[1]}/"]
        deadline = time.monotonic() + 30
        while not all(answers(url) for url in urls):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "console.log").read_text()
            time.sleep(0.2)  # real time: `idp dev` is another process starting up
        assert all(answers(url).status_code == 200 for url in urls)
        # The agencies are live clients: their login leads to this provider's /authorize.
        for host, port in zip(("127.0.0.1", "localhost"), agency_ports):
            login = answers(f"http://{host}:{port}/login")
            assert login.status_code == 302, (tmp_path / "console.log").read_text()
            assert login.headers["Location"].startswith(f"http://127.0.0.1:{provider_port}/authorize?")

        proc.send_signal(signum)
        assert proc.wait(15) == 0, (tmp_path / "console.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    # Nothing it started outlives it: the provider's port and both agencies' are closed.
    assert [port for port in (provider_port, *agency_ports) if port_open(port)] == []


@pytest.mark.parametrize("taken", ["provider", "agency"])
def test_a_taken_port_stops_idp_dev_at_once_with_one_line(tmp_path, taken):
    provider_port, agency_ports = free_port(), (free_port(), free_port())
    busy = provider_port if taken == "provider" else agency_ports[1]
    with socket.socket() as holder:  # an earlier run, or any other program
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        proc = idp_dev(tmp_path, provider_port, agency_ports, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"port {busy} is already in use" in lines[0], err
    assert ("[server] bind" if taken == "provider" else "--agency-ports") in lines[0]
    assert "Traceback" not in err
    # It stopped before anything else: no demo data, no agency started on the other ports.
    assert "Demo agencies" not in out and not (tmp_path / "instance" / "idp.sqlite3").exists()
    assert not any(port_open(port) for port in (provider_port, *agency_ports) if port != busy)
