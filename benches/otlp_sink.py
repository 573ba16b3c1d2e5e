"""An OTLP/HTTP collector that takes every batch and keeps nothing: the far end of
benches/tracing-load.sh, so the node's export runs as it would against a real one.
Answers 200 with an empty ExportTraceServiceResponse (zero bytes of protobuf)."""
import http.server
import sys


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
