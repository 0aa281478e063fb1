"""A stand-in dashboard: answers every POST with 201 and prints one line
per request it received, with the API key it carried.

usage: post_sink.py ADDR PORT
Prints "ready", then "post <path> key=<X-Api-Key>" per request.
"""
import http.server
import sys


class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        print("post %s key=%s" % (self.path, self.headers.get("X-Api-Key")), flush=True)
        body = b'{"created":1}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


srv = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("ready", flush=True)
srv.serve_forever()
