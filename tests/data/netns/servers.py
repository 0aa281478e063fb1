"""Test upstream: TCP and UDP echo servers on every address of the namespace.

usage: servers.py TCP_PORTS UDP_PORTS [UDP_ADDRS [TCP_ADDRS [MARK]]]   (comma lists, may be empty)
UDP sockets bind each of UDP_ADDRS (default: the wildcard), so a reply
leaves from the address the request was sent to; TCP listeners bind each
of TCP_ADDRS (default: the wildcard, v4 and v6). MARK is an SO_MARK for
the TCP listeners (egret's listen mark makes one egret's stand-in).
Each TCP line is answered with "echo:<line>", each UDP datagram with
"echo:<datagram>". Prints "ready" once every socket is bound.
"""
import socket
import struct
import sys
import threading


def tcp_conn(c):
    try:
        for line in c.makefile("rb"):
            c.sendall(b"echo:" + line)
    except OSError:
        pass
    c.close()


def tcp_serve(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()


def udp_serve(u):
    while True:
        d, a = u.recvfrom(2048)
        u.sendto(b"echo:" + d, a)


def ports(arg):
    return [int(p) for p in arg.split(",") if p]


tcp_addrs = [a for a in (sys.argv[4] if len(sys.argv) > 4 else "").split(",") if a]
mark = int(sys.argv[5], 0) if len(sys.argv) > 5 else 0
for p in ports(sys.argv[1]):
    for a in tcp_addrs or ["::"]:
        s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if mark:
            s.setsockopt(socket.SOL_SOCKET, 36, struct.pack("I", mark))  # SO_MARK
        if a == "::":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((a, p))
        s.listen(64)
        threading.Thread(target=tcp_serve, args=(s,), daemon=True).start()
addrs = [a for a in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if a]
for p in ports(sys.argv[2] if len(sys.argv) > 2 else ""):
    for a in addrs or ["::"]:
        u = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
        if a == "::":
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        u.bind((a, p))
        threading.Thread(target=udp_serve, args=(u,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
