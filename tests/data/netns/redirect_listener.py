"""Stands in for egret's proxies: listens on 127.0.0.1 and ::1 at the given
ports and answers every connection with "orig:<ip>:<port>", its
SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6).

usage: redirect_listener.py PORTS [MARK]
With MARK its sockets carry that SO_MARK: egret's listen mark, without
which the ruleset delivers nothing to them.
"""
import ipaddress
import socket
import struct
import sys
import threading

SO_ORIGINAL_DST = 80


def serve(s, v6):
    while True:
        c, _ = s.accept()
        try:
            if v6:
                raw = c.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
                port = struct.unpack("!H", raw[2:4])[0]
                ip = str(ipaddress.IPv6Address(raw[8:24]))
            else:
                raw = c.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
                port = struct.unpack("!H", raw[2:4])[0]
                ip = str(ipaddress.IPv4Address(raw[4:8]))
            c.sendall(("orig:%s:%d\n" % (ip, port)).encode())
        except OSError as e:
            c.sendall(("error:%s\n" % e).encode())
        c.close()


mark = int(sys.argv[2], 0) if len(sys.argv) > 2 else 0
for p in [int(x) for x in sys.argv[1].split(",")]:
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if mark:
            s.setsockopt(socket.SOL_SOCKET, 36, struct.pack("I", mark))  # SO_MARK
        s.bind((addr, p))
        s.listen(64)
        threading.Thread(target=serve, args=(s, fam == socket.AF_INET6), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
