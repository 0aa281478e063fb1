"""Upstream side of the escape and self-test tests: reports every frame
arriving on IFACE that carries MARKER anywhere (whatever its protocol or
address), or with "canary" every IPv4/IPv6 frame addressed to the
self-test's canaries (192.0.2.77, 2001:db8::77).

usage: sniff_marker.py IFACE MARKER|canary
Prints "ready", then "got N" for each such frame (N counts them).
"""
import socket
import sys

CANARY4 = socket.inet_aton("192.0.2.77")
CANARY6 = socket.inet_pton(socket.AF_INET6, "2001:db8::77")


def canary(f):
    return (f[12:14] == b"\x08\x00" and f[30:34] == CANARY4) or (f[12:14] == b"\x86\xdd" and f[38:54] == CANARY6)


want = canary if sys.argv[2] == "canary" else (lambda f, m=sys.argv[2].encode(): m in f)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind((sys.argv[1], 0))
print("ready", flush=True)
n = 0
while True:
    f, addr = s.recvfrom(65535)
    if addr[2] != socket.PACKET_OUTGOING and want(f):
        n += 1
        print("got %d" % n, flush=True)
