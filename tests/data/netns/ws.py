"""A minimal WebSocket (RFC 6455) server and client for the ws:// tests.

usage: ws.py server PORT ADDR[,ADDR...]
           Accepts handshakes, answers 101, sends a text frame
           "hello from <local address>", then echoes every text frame as
           "echo:<text>" until the client closes. Prints "ready".
       ws.py client HOST IP PORT MESSAGE...
           Sends a handshake for Host HOST to IP:PORT. Prints the status
           line; after a 101, prints "server: <first frame>" and one
           "echo: <text>" line per MESSAGE sent (masked, as a client must),
           then closes. Exit 0 when every echo came back, 3 otherwise.

Only the standard library (Debian's python3), no websocket package.
"""
import base64
import hashlib
import os
import socket
import struct
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed before the head ended: %r" % data)
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


class Reader:
    """Frames from a socket, starting with bytes already read."""

    def __init__(self, sock, pending=b""):
        self.sock, self.buf = sock, pending

    def take(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed inside a frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        b0, b1 = self.take(2)
        opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self.take(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self.take(8))
        mask = self.take(4) if masked else b"\0\0\0\0"
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(self.take(n)))
        return opcode, payload


def frame(opcode, payload, mask):
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def serve_conn(c):
    try:
        head, rest = read_head(c)
        key = ""
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        c.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept
            ).encode()
            + frame(1, ("hello from %s" % c.getsockname()[0]).encode(), False)
        )
        r = Reader(c, rest)
        while True:
            opcode, payload = r.frame()
            if opcode == 8:
                c.sendall(frame(8, payload, False))
                break
            if opcode == 1:
                c.sendall(frame(1, b"echo:" + payload, False))
    except (OSError, EOFError):
        pass
    c.close()


def server(port, addrs):
    for a in addrs:
        s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a, port))
        s.listen(16)

        def loop(s=s):
            while True:
                c, _ = s.accept()
                threading.Thread(target=serve_conn, args=(c,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def client(host, ip, port, messages):
    s = socket.create_connection((ip, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            "GET /chat HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host, key)
        ).encode()
    )
    try:
        head, rest = read_head(s)
    except (OSError, EOFError) as e:
        print("no answer: %s" % e)
        return 3
    status = head.split("\r\n")[0]
    print(status)
    if " 101 " not in status + " ":
        body = rest.decode("latin-1", "replace")
        print(body)
        return 3
    want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    if ("sec-websocket-accept: %s" % want.lower()) not in head.lower():
        print("bad accept")
        return 3
    r = Reader(s, rest)
    print("server: %s" % r.frame()[1].decode())
    ok = True
    for m in messages:
        s.sendall(frame(1, m.encode(), True))
        opcode, payload = r.frame()
        print("echo: %s" % payload.decode())
        ok = ok and opcode == 1 and payload == b"echo:" + m.encode()
    s.sendall(frame(8, b"\x03\xe8", True))
    s.close()
    return 0 if ok else 3


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3].split(","))
    else:
        sys.exit(client(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]))
