#!/usr/bin/env python3
"""Captures real ClientHellos into tests/data/fuzz/tls_client_hello/ (run from the repo root).

Listens on 127.0.0.1, runs each client against it, saves the first bytes the
client sends (until it stops sending for a moment), and closes. Only loopback.
"""
import os, socket, subprocess, sys, threading, time

OUT = "tests/data/fuzz/tls_client_hello"
CLIENTS = {
    "curl-sni.bin": ["curl", "-sk", "--max-time", "2", "--resolve", "Allowed.Example:{p}:127.0.0.1", "https://Allowed.Example:{p}/"],
    "curl-tls12.bin": ["curl", "-sk", "--max-time", "2", "--tls-max", "1.2", "--resolve", "allowed.example:{p}:127.0.0.1", "https://allowed.example:{p}/"],
    "curl-ip-no-sni.bin": ["curl", "-sk", "--max-time", "2", "https://127.0.0.1:{p}/"],
    "openssl-sni.bin": ["openssl", "s_client", "-connect", "127.0.0.1:{p}", "-servername", "www.allowed.example"],
    "openssl-noservername.bin": ["openssl", "s_client", "-connect", "127.0.0.1:{p}", "-noservername"],
}

def capture(name, argv):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    argv = [a.replace("{p}", str(port)) for a in argv]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ls.settimeout(5)
    conn, _ = ls.accept()
    conn.settimeout(0.5)
    data = b""
    while len(data) < 65536:
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    conn.close()
    ls.close()
    proc.kill()
    proc.wait()
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")

for name, argv in CLIENTS.items():
    capture(name, argv)
