"""Upstream side of the escape tests: reports every frame arriving on
IFACE that carries MARKER anywhere, whatever its protocol or address.

usage: sniff_marker.py IFACE MARKER
Prints "ready", then "got N" for each such frame (N counts them).
"""
import socket
import sys

marker = sys.argv[2].encode()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind((sys.argv[1], 0))
print("ready", flush=True)
n = 0
while True:
    f, addr = s.recvfrom(65535)
    if addr[2] != socket.PACKET_OUTGOING and marker in f:
        n += 1
        print("got %d" % n, flush=True)
