"""Upstream side of escape_59: reports every ARP request or IPv6 neighbour
solicitation arriving on IFACE whose target is TARGET4 or TARGET6 (the
addresses a workload would use as a covert channel by making its own
kernel ask for them).

usage: sniff_neigh.py IFACE TARGET4 TARGET6
Prints "ready", then "got arp" / "got ns" for each such frame.
"""
import socket
import sys

t4 = socket.inet_aton(sys.argv[2])
t6 = socket.inet_pton(socket.AF_INET6, sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    f, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[38:42] == t4:
        print("got arp", flush=True)
    # IPv6, ICMPv6 (58), type 135, target at ICMPv6 offset 8.
    if f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 135 and f[62:78] == t6:
        print("got ns", flush=True)
