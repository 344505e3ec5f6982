#!/usr/bin/env python3
"""Times `memwarden serve --check`, a start and three reloads with 200 consumers, half of them on
ports something listens on: the figures of docs/PERFORMANCE.md ("Start-up with many consumers").

    scripts/startup-timing.py target/release/memwarden
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1]
listeners = []
for _ in range(100):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    listeners.append(s)
text = '[server]\nlisten = "127.0.0.1:0"\n[[pool]]\nname = "ram"\nkind = "ram"\ncapacity = "1TiB"\n'
for i in range(200):
    port = listeners[i].getsockname()[1] if i < 100 else 20000 + i
    text += (f'[[consumer]]\nname = "c{i}"\npool = "ram"\nresident = "1GiB"\n'
             f'upstream = "http://127.0.0.1:{port}"\nunload = "POST /unload"\n')
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write(text)
cfg.close()

t = time.time()
subprocess.run([binary, "serve", "--gpu-source", "none", "--check", "--config", cfg.name],
               check=True, stdout=subprocess.DEVNULL)
check = time.time() - t

t = time.time()
p = subprocess.Popen([binary, "serve", "--gpu-source", "none", "--config", cfg.name],
                     stderr=subprocess.PIPE, text=True, env=dict(os.environ, RUST_LOG="info"))


def until(word):
    for line in p.stderr:
        if word in line:
            return
    sys.exit(f"serve ended before {word!r}")


until("memwarden broker listening")
start = time.time() - t
reloads = []
for _ in range(3):
    t = time.time()
    p.send_signal(signal.SIGHUP)
    until("daemon: configuration reloaded")
    reloads.append(time.time() - t)
p.send_signal(signal.SIGTERM)
p.wait()
os.unlink(cfg.name)
print(f"200 consumers: --check {check:.2f} s, start {start:.2f} s, reloads "
      + ", ".join(f"{r:.2f}" for r in reloads) + " s")
