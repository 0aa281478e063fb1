"""A long-lived TCP flow: connects, exchanges "a", prints "ready", then for
every stdin line sends it and prints the outcome as JSON.

usage: session.py HOST PORT
"""
import json
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=3)
s.sendall(b"a\n")
assert s.recv(100).strip() == b"echo:a"
print("ready", flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        data = s.recv(100)
        out = {"ok": data.decode().strip()} if data else {"err": "closed"}
    except Exception as e:
        out = {"err": type(e).__name__}
    print(json.dumps(out), flush=True)
