"""Test upstream: an HTTP/1.1 server on port PORT of every given address.

usage: http_server.py PORT ADDR[,ADDR...]
Answers every GET with "hello from <local address>" (so a test can tell
which address served it). Prints "ready" once every socket is bound.
"""
import http.server
import socketserver
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = ("hello from %s\n" % self.connection.getsockname()[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port = int(sys.argv[1])
    servers = []
    for addr in sys.argv[2].split(","):
        cls = Server
        if ":" in addr:
            cls = type("Server6", (Server,), {"address_family": __import__("socket").AF_INET6})
        servers.append(cls((addr, port), Handler))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()


main()
