//! A real local server process that poses as `ollama serve`, shared by the probe's and the
//! command line's tests.

use std::io::BufRead;
use std::process::{Command, Stdio};

/// A real local server process that calls itself `ollama serve` and answers `/api/ps` with
/// `body` (or HTML when `body` is empty); returns the child and the port it listens on.
pub fn fake_ollama(body: &str) -> (std::process::Child, u16) {
    let src = r#"
import http.server, sys
body = sys.argv[2].encode() if len(sys.argv) > 2 else b""
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        ctype = "application/json" if body else "text/html"
        self.send_header("Content-Type", ctype)
        data = body or b"<html><body>hello</body></html>"
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    // The interpreter itself, not a wrapper script that would exec it under its own name.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    let python = String::from_utf8(python.stdout).unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(r#"exec -a ollama "$0" -c "$1" serve "$2""#)
        .arg(python.trim())
        .arg(src)
        .arg(body)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().expect("a port"))
}
