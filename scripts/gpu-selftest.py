#!/usr/bin/env python3
"""Proves on this machine that memwarden's GPU figures and its broker's evictions are right.

    gpu-selftest.py MEMWARDEN [--device auto|cuda|rocm|cpu] [--sizes 1,2,3] [--out DIR]
    gpu-selftest.py consumer PORT GIB [--device auto|cuda|rocm|cpu] [--liar] [--name NAME]

The first form starts three consumers (this script in its consumer mode) that allocate and touch
GPU memory with PyTorch, reads what each holds independently of memwarden (nvidia-smi or rocm-smi,
and torch's own count), compares `memwarden snapshot --json` with that, runs `memwarden serve` with
a pool that fits two of three consumers and makes it evict, watches `memwarden top` in tmux, and
prints a table (check, expected, seen, ok). Exit 0 when every check holds, 1 when one does not,
2 when it cannot run here (no GPU, no PyTorch, no memwarden binary). It leaves no process behind
and ends within 4 minutes. `--device cpu` runs the broker part alone on a `ram` pool with host
memory, which needs neither a GPU nor PyTorch.

The consumer form is a small model-server stand-in: `POST /load` allocates GIB and touches it,
`POST /unload` frees it (`torch.cuda.empty_cache()` on a GPU), `GET /health`, `GET /info` (JSON:
pid, loaded, torch's reserved bytes), `ANY /work`. With `--liar` it answers 200 to the unload and
keeps its memory. It prints `listening on PORT` once it accepts connections.
"""
import atexit, json, mmap, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GIB, MIB = 1 << 30, 1 << 20
BUDGET_S = 230  # the whole run, under 4 minutes with cleanup
CHECKS = []  # (check, expected, seen, ok) where ok is True, False or None (could not apply)


def fail(msg, code=2):
    print(f"gpu-selftest: {msg}", file=sys.stderr)
    sys.exit(code)


def size(n):
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / MIB:.0f} MiB"


def check(name, expected, seen, ok):
    CHECKS.append((name, expected, str(seen), ok))


# ---- the consumer: a model-server stand-in -------------------------------------------------

class Memory:
    """What a consumer holds: a touched torch tensor on the GPU, or touched anonymous host memory
    that munmap gives back to the kernel at once (so resident memory really falls)."""

    def __init__(self, device):
        self.device, self.torch = device, None
        if device != "cpu":
            import torch  # only GPU modes need it; its import takes seconds
            self.torch = torch
            torch.zeros(1, device="cuda")  # the context, held from the start as a server's is

    def alloc(self, n):
        if self.torch:
            return self.torch.ones(n, dtype=self.torch.uint8, device="cuda")
        m = mmap.mmap(-1, max(n, 1))
        chunk = b"\1" * MIB
        for off in range(0, n, MIB):
            m[off:off + min(MIB, n - off)] = chunk[: min(MIB, n - off)]
        return m

    def free(self, held):
        if not self.torch:
            held.close()
        del held
        if self.torch:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()

    def reserved(self):
        return self.torch.cuda.memory_reserved() if self.torch else None


def consumer(argv):
    port, gib = int(argv[0]), float(argv[1])
    opts = parse_opts(argv[2:], {"--device": "auto", "--name": "consumer"}, {"--liar"})
    device = pick_device(opts["--device"])
    mem, lock = Memory(device if device != "none" else "cpu"), threading.Lock()
    state = {"held": None, "kept": []}
    n = int(gib * GIB)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def answer(self, code, body, kind="text/plain"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/health":
                return self.answer(200, "ok")
            if path == "/info":
                with lock:
                    info = {"pid": os.getpid(), "name": opts["--name"], "device": device,
                            "loaded": state["held"] is not None, "kept": len(state["kept"]),
                            "reserved_bytes": mem.reserved()}
                return self.answer(200, json.dumps(info), "application/json")
            if path == "/work":
                return self.answer(200, f"{opts['--name']} ok loaded={state['held'] is not None}\n")
            self.answer(404, "not found")

        def do_POST(self):
            length = min(int(self.headers.get("Content-Length") or 0), 1 << 16)
            self.rfile.read(length)
            path = self.path.split("?")[0]
            with lock:
                if path == "/load":
                    if state["held"] is None:
                        try:
                            state["held"] = mem.alloc(n)
                        except Exception as e:  # out of memory: say so, as a server would
                            return self.answer(507, f"cannot allocate: {e}")
                    return self.answer(200, "loaded")
                if path == "/unload":
                    held, state["held"] = state["held"], None
                    if held is not None and opts["--liar"]:
                        state["kept"].append(held)
                    elif held is not None:
                        mem.free(held)
                    return self.answer(200, "unloaded")
            if path == "/work":
                return self.do_GET()
            self.answer(404, "not found")

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # one line, not a traceback per client gone
            print(f"consumer {opts['--name']}: {sys.exc_info()[1]!r}", file=sys.stderr)

    server = Server(("127.0.0.1", port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


# ---- helpers: options, processes, HTTP, readings ---------------------------------------------

def parse_opts(argv, values, flags):
    opts = dict(values, **{f: False for f in flags})
    it = iter(argv)
    for a in it:
        if a in values:
            opts[a] = next(it, None) or fail(f"{a} needs a value")
        elif a in flags:
            opts[a] = True
        else:
            fail(f"unknown argument {a!r} (see the top of {sys.argv[0]})")
    return opts


def gpu_tool():
    """The vendor tool that lists a GPU here: 'cuda' (nvidia-smi), 'rocm' (rocm-smi) or None."""
    for tool, dev, args in (("nvidia-smi", "cuda", ["-L"]), ("rocm-smi", "rocm", ["--showid"])):
        if shutil.which(tool) and "GPU" in (smi([tool] + args) or ""):
            return dev
    return None


def pick_device(asked):
    if asked in ("cpu", "cuda", "rocm"):
        return asked
    if asked != "auto":
        fail(f"--device must be auto, cuda, rocm or cpu, not {asked!r}")
    return gpu_tool() or "none"


PROCS = []  # process groups this script started; all are ended at exit, whatever happens
GROUPS = set()  # every one of them, to prove at the end that none has a process left


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    PROCS.append(p)
    GROUPS.add(p.pid)
    return p


def proc_stats():
    """(pid, parent, process group) of every process /proc shows (a sandbox may show fewer)."""
    for e in os.listdir("/proc"):
        try:
            with open(f"/proc/{e}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            yield int(e), int(fields[1]), int(fields[2])
        except (OSError, ValueError, IndexError):
            pass


def left_behind():
    return [pid for pid, _, group in proc_stats() if group in GROUPS]


def end_all():
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in PROCS:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 5
        for p in PROCS:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        if all(p.poll() is not None for p in PROCS) and not left_behind():
            break  # (SIGKILL only for what SIGTERM did not end, a group's other members too)
    PROCS.clear()


def read_first_line(p, timeout):
    """The first line a child prints, within `timeout` (a child that hangs must not hang us)."""
    import selectors
    sel, buf, deadline = selectors.DefaultSelector(), b"", time.time() + timeout
    sel.register(p.stdout, selectors.EVENT_READ)
    while b"\n" not in buf and time.time() < deadline:
        if sel.select(max(0.0, deadline - time.time())):
            chunk = os.read(p.stdout.fileno(), 256)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").split("\n")[0]


def http(method, url, timeout=30):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(1 << 20).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(1 << 20).decode(errors="replace")
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    """Resident bytes of a process from /proc, or None where /proc does not show it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def wait_until(cond, within, step=0.1):
    deadline = time.time() + within
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


class Consumer:
    def __init__(self, name, gib, device, liar=False, prefix=()):
        cmd = list(prefix) + [sys.executable, os.path.abspath(__file__), "consumer", "0", str(gib),
                              "--device", device, "--name", name] + (["--liar"] if liar else [])
        # torch's device 0 is then nvidia-smi's GPU 0, not the fastest card
        env = dict(os.environ, CUDA_DEVICE_ORDER="PCI_BUS_ID")
        self.name, self.bytes, self.prefix = name, int(gib * GIB), prefix
        self.proc = spawn(cmd, stdout=subprocess.PIPE, env=env)

    def ready(self):
        """Waits for it to listen (importing torch takes seconds: all start before any is waited for)."""
        line = read_first_line(self.proc, 120)
        if not line.startswith("listening on "):
            raise RuntimeError(f"consumer {self.name} did not start: {line!r}")
        self.port = int(line.split()[-1])
        self.pid = self.info().get("pid", self.proc.pid)  # its pid as its own namespace sees it
        self.host_pid = self.proc.pid if not self.prefix else ns_child(self.proc.pid)
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def info(self):
        code, body = http("GET", self.url("/info"))
        return json.loads(body) if code == 200 else {}


def ns_child(pid):
    """The process a `unshare --fork` runs, as this pid namespace sees it: the one whose parent
    it is."""
    return next((child for child, parent, _ in proc_stats() if parent == pid), None)


def smi(args, timeout=30):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return out.stdout if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def vendor_reading(device):
    """Independent of memwarden: ({gpu index: (name, used, total, bus)}, {pid: bytes}, driver)."""
    gpus, procs, driver = {}, {}, "?"
    if device == "cuda":
        q = "index,name,driver_version,memory.used,memory.total,pci.bus_id"
        for row in csv_rows(smi(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"])):
            if len(row) == 6:
                gpus[int(row[0])] = (row[1], int(row[3]) * MIB, int(row[4]) * MIB, bus(row[5]))
                driver = row[2]
        apps = smi(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        for row in csv_rows(apps):
            if len(row) == 2 and row[0].isdigit() and row[1].isdigit():
                procs[int(row[0])] = procs.get(int(row[0]), 0) + int(row[1]) * MIB
    else:
        mem = json.loads(smi(["rocm-smi", "--showmeminfo", "vram", "--json"]) or "{}")
        for card, v in mem.items():
            if card.startswith("card"):
                gpus[int(card[4:])] = ("AMD GPU", int(v.get("VRAM Total Used Memory (B)", 0)),
                                       int(v.get("VRAM Total Memory (B)", 0)), "")
        for key, v in json.loads(smi(["rocm-smi", "--showpids", "--json"]) or "{}").get("system", {}).items():
            fields = [f.strip() for f in str(v).split(",")]
            if key.startswith("PID") and len(fields) >= 3 and fields[2].isdigit():
                procs[int(key[3:])] = int(fields[2])
        driver = (smi(["cat", "/sys/module/amdgpu/version"]) or "?").strip()
    return gpus, procs, driver


def csv_rows(text):
    return [[c.strip() for c in line.split(",")] for line in (text or "").splitlines() if line.strip()]


def bus(b):
    """PCI bus ids as memwarden writes them: 4-digit domain, lower case."""
    parts = b.strip().lower().split(":")
    if len(parts) != 3:
        return b.strip().lower()
    return f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}"


def snapshot(memwarden, root=None):
    args = [memwarden] + (["--root", root] if root else []) + ["snapshot", "--json"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def mw_vram(snap, pid, gpu):
    for p in (snap or {}).get("processes", []):
        if p.get("pid") == pid:
            return sum(g.get("vram_bytes") or 0 for g in p.get("gpu", []) if g.get("gpu_index") == gpu)
    return None


def unattributed(snap, gpu):
    g = next((g for g in (snap or {}).get("gpus", []) if g.get("index") == gpu), None)
    if g is None or g.get("vram_used_bytes") is None:
        return None
    held = sum(mw_vram(snap, p["pid"], gpu) or 0 for p in snap.get("processes", []))
    return g["vram_used_bytes"] - held


def hidden_root(pid):
    """A root for `memwarden --root` that is this machine with /proc/PID taken away: a process
    whose /proc entry cannot be read, as one in another container is."""
    root = tempfile.mkdtemp(prefix="gpu-selftest-root-")
    os.mkdir(f"{root}/proc")
    for e in os.listdir("/proc"):
        if e != str(pid):
            os.symlink(f"/proc/{e}", f"{root}/proc/{e}")
    for d in ("sys", "run", "dev"):
        if os.path.exists(f"/{d}"):
            os.symlink(f"/{d}", f"{root}/{d}")
    return root


# ---- the steps -------------------------------------------------------------------------------

def held_now(c, device):
    """What a consumer holds, read without memwarden: its resident memory on a CPU; on a GPU the
    vendor tool's figure for its pid, or torch's reserved bytes where the tool lists no pids."""
    if device == "cpu":
        return rss(c.host_pid)
    figure = vendor_reading(device)[1].get(c.host_pid)
    return figure if figure is not None else c.info().get("reserved_bytes")


def steps_1_2(mw, device, sizes):
    """Three consumers hold known amounts; memwarden's figures against the vendor's and torch's.
    Returns the GPU (memwarden's index) and its name."""
    tool = "nvidia-smi" if device == "cuda" else "rocm-smi"
    cons = [c.ready() for c in [Consumer(f"c{i + 1}", g, device) for i, g in enumerate(sizes)]]
    codes = [http("POST", c.url("/load"), 120)[0] for c in cons]
    check("1 consumers allocate on the GPU", "200 each", codes, codes == [200] * len(cons))
    time.sleep(1)
    gpus, procs, driver = vendor_reading(device)
    infos = {c.name: c.info() for c in cons}
    snap = snapshot(mw)
    check("2 memwarden snapshot --json", "a snapshot", "ok" if snap else "failed", snap is not None)
    name, smi_used, _, bus_id = gpus.get(0) or ("?", None, None, "")
    # memwarden numbers the GPUs its own way: the one torch uses is found by its bus id
    gpu = next((g["index"] for g in (snap or {}).get("gpus", []) if bus_id and g.get("bus_id") == bus_id), 0)
    print(f"GPU {gpu}: {name}, bus {bus_id or '?'}, driver {driver}", flush=True)
    if not procs:
        check(f"1 {tool} lists processes", "our 3 pids", "none (a sandboxed kernel hides them)", None)
    unseen = []
    for c in cons:
        reserved = infos[c.name].get("reserved_bytes") or 0
        check(f"1 {c.name} torch reserved", f">= {size(c.bytes)}", size(reserved), reserved >= c.bytes)
        ours, theirs = mw_vram(snap, c.host_pid, gpu), procs.get(c.host_pid)
        if not ours:
            unseen.append((c, reserved))
            continue
        if theirs is not None:
            check(f"2 {c.name} pid {c.host_pid} vs {tool}", "equal (1 MiB rounding)",
                  f"{size(ours)} / {size(theirs)}", abs(ours - theirs) <= MIB)
        check(f"2 {c.name} beyond torch reserved", "a CUDA context, 0-1.5 GiB", size(ours - reserved),
              0 <= ours - reserved <= 1.5 * GIB)
    mw_gpu = next((g for g in (snap or {}).get("gpus", []) if g.get("index") == gpu), {})
    mw_used, slack = mw_gpu.get("vram_used_bytes"), 64 * MIB + (mw_gpu.get("vram_reserved_bytes") or 0)
    if smi_used is not None and mw_used is not None:
        check(f"2 GPU {gpu} used vs {tool}", f"equal within {size(slack)}", f"{size(mw_used)} / {size(smi_used)}",
              abs(mw_used - smi_used) <= slack)
    total = sum(c.bytes for c in cons)
    check(f"2 GPU {gpu} used covers the consumers", f">= {size(total)}", size(mw_used or 0), (mw_used or 0) >= total)
    if unseen:  # a process memwarden cannot place must still count, as unattributed
        want = sum(r for _, r in unseen) * 9 // 10
        why = ", ".join(f"{c.name} ({'no /proc entry' if rss(c.host_pid) is None else 'readable'})" for c, _ in unseen)
        check("2 unplaced consumers are unattributed", f">= {size(want)}", f"{size(unattributed(snap, gpu) or 0)}: {why}",
              (unattributed(snap, gpu) or 0) >= want)
    hidden_proc_check(mw, cons[0], gpu, snap)
    namespace_check(mw, device, sizes[0], gpu)
    return gpu, name


def hidden_proc_check(mw, c, gpu, snap):
    """memwarden with c's /proc entry taken away must report c's memory as unattributed."""
    if not mw_vram(snap, c.host_pid, gpu):
        return check("2 unreadable /proc/PID", "unattributed", "unattributed already (see above)", None)
    root = hidden_root(c.host_pid)
    try:
        hid = snapshot(mw, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    before, after = unattributed(snap, gpu), unattributed(hid, gpu)
    if hid is None or before is None or after is None:
        return check("2 unreadable /proc/PID", "unattributed", "no reading", False)
    listed = any(p.get("pid") == c.host_pid for p in hid.get("processes", []))
    grew = after - before
    check(f"2 unreadable /proc/{c.host_pid}", f"not listed, unattributed +{size(c.bytes)}",
          f"{'listed' if listed else 'not listed'}, +{size(grew)}", not listed and grew >= c.bytes * 9 // 10)


def namespace_check(mw, device, gib, gpu):
    """A consumer in a pid namespace of its own: memwarden sees it by this namespace's pid."""
    prefix = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]
    probe = smi(prefix + ["true"], timeout=10)
    if probe is None or not shutil.which("unshare"):
        return check("2 process in another pid namespace", "attributed", "cannot make a pid namespace here", None)
    try:
        c = Consumer("ns", gib, device, prefix=prefix).ready()
    except RuntimeError as e:
        return check("2 process in another pid namespace", "attributed", e, None)
    code = http("POST", c.url("/load"), 120)[0]
    snap = snapshot(mw)
    ours = mw_vram(snap, c.host_pid, gpu) if c.host_pid else None
    if ours:
        return check("2 process in another pid namespace", f">= {size(c.bytes)} at pid {c.host_pid}",
                     f"{size(ours)} (its own pid {c.pid})", code == 200 and ours >= c.bytes)
    u = unattributed(snap, gpu) or 0
    check("2 process in another pid namespace", f"attributed or unattributed >= {size(c.bytes)}",
          f"unattributed {size(u)}", code == 200 and u >= c.bytes * 9 // 10)


def step_3(mw, device, gib, gpu):
    """serve with a pool that fits two of three consumers: evictions give memory back, the liar is
    found stuck. Everything memwarden says is checked against readings of our own."""
    s, cushion = int(gib * GIB), 64 * MIB
    cons = {n: Consumer(n, gib, device, liar=n == "liar") for n in ("a", "b", "liar")}
    cons = {n: c.ready() for n, c in cons.items()}
    base = {n: held_now(c, device) or 0 for n, c in cons.items()}
    ctx = max(base.values())  # what each holds unloaded: the interpreter, or its CUDA context
    capacity = 2 * (s + ctx) + s // 2 + cushion
    port = free_port()
    pool = "kind = \"ram\"" if device == "cpu" else f"kind = \"vram\"\ngpu = {gpu}"
    toml = (f"[server]\nlisten = \"127.0.0.1:{port}\"\n[[pool]]\nname = \"p\"\n{pool}\n"
            f"capacity = {capacity}\ncushion = {cushion}\nverify_timeout = \"3s\"\nmax_wait = \"5s\"\n")
    for n, c in cons.items():
        toml += (f"[[consumer]]\nname = \"{n}\"\npool = \"p\"\nresident = {s}\n"
                 f"upstream = \"http://127.0.0.1:{c.port}\"\nload = \"POST /load\"\n"
                 f"unload = \"POST /unload\"\nhealth = \"GET /health\"\n")
    with open(f"{OUT}/memwarden.toml", "w") as f:
        f.write(toml)
    src = "none" if device == "cpu" else "auto"
    with open(f"{OUT}/serve.log", "w") as log:
        spawn([mw, "--gpu-source", src, "serve", "--config", f"{OUT}/memwarden.toml"], stdout=log, stderr=log)
    broker = f"http://127.0.0.1:{port}"
    up = wait_until(lambda: http("GET", f"{broker}/healthz", 2)[0] == 200, 30)
    check("3 memwarden serve starts", "healthz 200", "up" if up else "not up (see serve.log)", up)
    if not up:
        return

    def status():
        code, body = http("GET", f"{broker}/v1/status")
        return json.loads(body) if code == 200 else {}

    def state(st, n):
        return next((c.get("state") for c in st.get("consumers", []) if c.get("name") == n), None)

    def measured(n):
        return next((c.get("measured_bytes") or 0 for c in status().get("consumers", []) if c.get("name") == n), 0)

    def loaded(st):
        return {c.get("name") for c in st.get("consumers", []) if c.get("state") == "loaded"}

    def ask(n, evictions):
        """Requests work of `n`; whatever the broker chose to evict for it (its choice weighs
        reload time and demand, so which one is its to make) must have given its memory back,
        in our own reading, before the request was answered. Returns the victims."""
        before = loaded(status())
        code, body = http("GET", f"{broker}/c/{n}/work", 60)
        # Until a reading after its load shows what it holds (twice a second) the broker counts
        # what it declared, which leaves out the interpreter's (or CUDA context's) own memory.
        wait_until(lambda: measured(n) >= s, 5)
        st = status()
        seen = f"{code}, evictions {st.get('counters', {}).get('evictions')}"
        check(f"3 request for {n}", f"200, evictions {evictions}", seen,
              code == 200 and st.get("counters", {}).get("evictions") == evictions)
        gone = sorted(before - loaded(st) - {"liar"})
        for g in gone:
            now = held_now(cons[g], device) or 0
            check(f"3 {g} evicted: memory back", f"<= {size(base[g] + s // 10)}",
                  f"{size(now)}, {state(st, g)}", now <= base[g] + s // 10 and state(st, g) == "unloaded")
        return gone

    ask("a", 0)
    ask("b", 0)
    evictions = 1
    ask("liar", evictions)
    # Each round asks for the one unloaded to make room; when the broker picks the liar, it
    # answers its unload and keeps its memory, is found stuck, and another goes instead.
    for _ in range(6):
        if state(status(), "liar") == "stuck":
            break
        evictions += 1
        ask(next(n for n in ("a", "b") if state(status(), n) != "loaded"), evictions)
    st = status()
    kept = held_now(cons["liar"], device) or 0
    check("3 the liar ends stuck", "stuck", state(st, "liar"), state(st, "liar") == "stuck")
    check("3 the liar still holds", f">= {size(base['liar'] + s * 9 // 10)}", size(kept),
          kept >= base["liar"] + s * 9 // 10)
    code, body = http("POST", f"{broker}/v1/consumers/liar/unload", 30)
    check("3 retried unload of the liar", "409, still stuck", code, code == 409)


def step_4(mw, device, gpu_name):
    """`memwarden top` in a tmux pane for a few seconds; the screen is kept in the output."""
    if not shutil.which("tmux"):
        return check("4 memwarden top in tmux", "a screen", "tmux is not installed", None)
    sock = f"gpu-selftest-{os.getpid()}"
    src = "none" if device == "cpu" else "auto"
    tmux = ["tmux", "-L", sock]
    subprocess.run(tmux + ["new-session", "-d", "-x", "160", "-y", "48", f"{mw} --gpu-source {src} top"],
                   timeout=10, capture_output=True)
    try:
        time.sleep(5)
        out = subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True, text=True, timeout=10)
        screen = out.stdout
    finally:
        subprocess.run(tmux + ["kill-server"], timeout=10, capture_output=True)
    with open(f"{OUT}/top-screen.txt", "w") as f:
        f.write(screen)
    # Its live header on the first line says it runs (a crash leaves the shell's text instead).
    want, live = "Host memory" if device == "cpu" else gpu_name[:20], "live every" in screen.split("\n")[0]
    seen = ("live, " if live else "not live, ") + ("shown" if want in screen else "not shown (see top-screen.txt)")
    check("4 memwarden top shows", f"live, {want!r}", seen, live and want in screen)
    return screen


def table():
    rows = [("check", "expected", "seen", "ok")] + [
        (c, e, s, {True: "ok", False: "FAIL", None: "n/a"}[ok]) for c, e, s, ok in CHECKS]
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(4)]
    lines = ["  ".join(str(v)[:w].ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def on_signal(sig, _frame):
    print(f"gpu-selftest: stopped by signal {sig}; ending what it started", file=sys.stderr)
    raise SystemExit(128 + sig)


def on_alarm(_sig, _frame):
    raise TimeoutError(f"not done within {BUDGET_S} s")


OUT = None


def main(argv):
    global OUT
    if argv and argv[0] == "consumer":
        if len(argv) < 3:
            fail("usage: gpu-selftest.py consumer PORT GIB [--device D] [--liar] [--name NAME]")
        return consumer(argv[1:])
    if not argv or argv[0].startswith("-"):
        fail("usage: gpu-selftest.py MEMWARDEN [--device auto|cuda|rocm|cpu] [--sizes 1,2,3] [--out DIR]")
    mw = os.path.abspath(argv[0])
    opts = parse_opts(argv[1:], {"--device": "auto", "--sizes": None, "--out": None}, set())
    if not (os.path.isfile(mw) and os.access(mw, os.X_OK)):
        fail(f"{argv[0]} is not an executable file: build it with `cargo build --release` (target/release/memwarden)")
    device = pick_device(opts["--device"])
    if device == "none":
        fail("no GPU here: neither nvidia-smi nor rocm-smi lists one (--device cpu runs the broker check alone)")
    try:
        sizes = [float(v) for v in (opts["--sizes"] or ("0.0625" if device == "cpu" else "1,2,3")).split(",")]
    except ValueError:
        fail(f"--sizes takes GiB separated by commas, not {opts['--sizes']!r}")
    if not sizes or not all(0 < g <= 64 for g in sizes):
        fail("--sizes must be between 0 and 64 GiB each")
    if device != "cpu":
        versions = smi([sys.executable, "-c", "import torch; print(torch.__version__, torch.version.cuda or torch.version.hip, torch.cuda.is_available())"], 120)
        if not versions or not versions.split()[-1] == "True":
            fail("PyTorch with CUDA or ROCm is needed and sees no GPU (pip install torch)")
        print(f"PyTorch {versions.split()[0]} (CUDA/HIP {versions.split()[1]})", flush=True)
    OUT = opts["--out"] or tempfile.mkdtemp(prefix="gpu-selftest-")
    os.makedirs(OUT, exist_ok=True)
    atexit.register(end_all)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(BUDGET_S)
    started, screen = time.time(), ""
    try:
        gpu, gpu_name = 0, ""
        if device != "cpu":
            gpu, gpu_name = steps_1_2(mw, device, sizes)
            screen = step_4(mw, device, gpu_name)
            end_all()  # step 1's consumers go before the broker's own three start
        step_3(mw, device, sizes[0], gpu)
        if device == "cpu":
            screen = step_4(mw, device, gpu_name)
    except (TimeoutError, RuntimeError, OSError) as e:
        check("the run", "completes", str(e), False)
    finally:
        signal.alarm(0)
        end_all()
    left = left_behind()
    check("5 no process left behind", "none", ", ".join(map(str, left)) or "none", not left)
    took = time.time() - started
    check("5 took", "< 240 s", f"{took:.0f} s", took < 240)
    text = table()
    with open(f"{OUT}/table.txt", "w") as f:
        f.write(text + "\n")
    if screen:
        print(f"memwarden top after 5 s:\n{screen.rstrip()}\n")
    print(text)
    failed = sum(1 for c in CHECKS if c[3] is False)
    print(f"\n{len(CHECKS) - failed}/{len(CHECKS)} checks hold ({'all' if not failed else f'{failed} fail'}); "
          f"serve log, config and top's screen in {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
