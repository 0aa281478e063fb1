"""Test client: one request, one JSON line with the outcome.

usage: client.py HOST PORT tcp|udp PAYLOAD [MARK]
Prints {"ok": "<reply>", "secs": S} or {"err": "<exception class>", "secs": S}.
Every socket operation has a 3 s timeout.
"""
import json
import socket
import struct
import sys
import time

host, port, proto, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
mark = int(sys.argv[5], 0) if len(sys.argv) > 5 else 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
start = time.monotonic()
try:
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    if mark:
        s.setsockopt(socket.SOL_SOCKET, 36, struct.pack("I", mark))  # SO_MARK
    s.settimeout(3)
    s.connect((host, port))
    s.send(payload.encode() + b"\n")
    data = s.recv(200)
    out = {"ok": data.decode().strip()}
except Exception as e:  # the outcome is the data
    out = {"err": type(e).__name__}
out["secs"] = time.monotonic() - start
print(json.dumps(out), flush=True)
