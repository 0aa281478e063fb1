"""Upstream side of the self-test tests: counts frames addressed to the
self-test's canaries (192.0.2.77, 2001:db8::77) arriving on IFACE.

usage: canary_sniff.py IFACE
Prints "ready", then "got N" for every such frame (N counts them all).
"""
import socket
import sys

CANARY4 = socket.inet_aton("192.0.2.77")
CANARY6 = socket.inet_pton(socket.AF_INET6, "2001:db8::77")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind((sys.argv[1], 0))
print("ready", flush=True)
n = 0
while True:
    f, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    if (f[12:14] == b"\x08\x00" and f[30:34] == CANARY4) or (f[12:14] == b"\x86\xdd" and f[38:54] == CANARY6):
        n += 1
        print("got %d" % n, flush=True)
