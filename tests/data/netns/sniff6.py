"""Upstream side of the ICMPv6 covert-channel tests: counts ICMPv6
messages that carry the attacker's marker.

usage: sniff6.py
Prints "ready", then one line "got TYPE" per ICMPv6 message whose body
contains b"egret-covert" (whatever the destination, the hop limit or the
kernel's own verdict on it: a raw socket sees every message).
"""
import socket

s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
print("ready", flush=True)
while True:
    data, _ = s.recvfrom(4096)
    if b"egret-covert" in data:
        print("got %d" % data[0], flush=True)
