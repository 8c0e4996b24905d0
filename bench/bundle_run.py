#!/usr/bin/env python3
"""The benchmark runner of a bench/bundle.sh bundle (issue 17). Python 3 standard library only.

Runs, from the bundle's own binaries and libraries (each started through the bundled dynamic
loader), the workloads of bench/run.sh on the systems under test, each pinned to its own CPUs:

  systems    gateway (the bundle's dcr-gateway, fixtures' largest rule list + GeoIP, config of
             bench/gateway-config.sh), bare Pingora, nginx `geo`, HAProxy, and "direct" (the
             upstream alone)
  workloads  post (POST /oidc/register, 566-byte registration), get (GET /authorize pass-through),
             blocked (the POST from a User-Agent every system blocks: 403), limited (the POST
             against a one-registration-per-IP-per-hour limit: 429)
  workers    1 and 4 by default: a system with W workers runs on CPUs 0..W-1, wrk and the
             upstream nginx on the CPUs after the largest W; connections and wrk threads scale
             with W
  fixed rate oha with latency correction at 25 % and 50 % of the gateway's one-worker
             capacity (post, get)
  phases     with bin/dcr-gateway-phases: CPU per request phase (dcr_gateway_phase_cpu_seconds_total)

CPU per request of every system comes from /proc/<pid>/stat (utime + stime of the process and
its children). Writes report.md (markdown) and results.tsv next to run.py, or under --out.

  python3 run.py                                    # 5 s x 2 rounds, workers 1,4
  python3 run.py --duration 2 --rounds 1 --workers 1 --no-fixed-rate     # a smoke run
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
HZ = os.sysconf("SC_CLK_TCK")
GET_PATH = ("/authorize?client_id=bench&response_type=code&redirect_uri="
            "http%3A%2F%2F127.0.0.1%3A33418%2Foauth%2Fcallback&scope=openid")
POST_PATH = "/oidc/register"
SYSTEMS = ["gateway", "bare", "nginx", "haproxy"]
WORKLOADS = ["post", "get", "blocked", "limited"]
PHASE_ORDER = ["request_view", "acl", "request_filter", "dcr_admission", "rate_limit", "body_read", "validation",
               "refusal", "upstream_request_filter", "response_hooks", "logging"]


def log(msg):
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bundle:
    def __init__(self, root):
        self.root = root
        self.loader = os.path.join(root, "lib", "ld-linux-x86-64.so.2")
        self.lib = os.path.join(root, "lib")
        if not os.path.exists(self.loader):
            sys.exit(f"{self.loader} is missing: run.py runs from a bench/bundle.sh bundle")

    def cmd(self, binary, *args):
        """A bundled binary started through the bundled loader and libraries only."""
        return [self.loader, "--library-path", self.lib, os.path.join(self.root, "bin", binary), *args]

    def has(self, binary):
        return os.path.exists(os.path.join(self.root, "bin", binary))

    def path(self, *parts):
        return os.path.join(self.root, *parts)


class Procs:
    """Every process started here, stopped (TERM, then KILL) whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, cpus, log_path, env=None):
        out = open(log_path, "ab")

        def pin():
            if cpus:
                os.sched_setaffinity(0, cpus)
            os.setpgrp()

        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=pin, env=env or {"PATH": "/usr/bin:/bin"})
        out.close()
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def http(url, data=None, headers=None, timeout=2):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_http(url, code, what, proc):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before answering {url}")
        if http(url)[0] == code:
            return
        time.sleep(0.2)
    sys.exit(f"{what} did not come up ({url})")


def cpu_ticks(pid):
    """utime + stime of pid and its children (nginx master + workers)."""
    if not pid:
        return 0
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def mem_kb(pid, field):
    total = 0
    pids = [pid] + [int(d) for d in os.listdir("/proc") if d.isdigit() and _ppid(int(d)) == pid]
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        return float("nan")
    v, u = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[u]


def parse_wrk(text):
    r = {"reqs": 0, "rps": 0.0, "p50": float("nan"), "p99": float("nan"), "non2xx": 0, "errors": 0}
    for line in text.splitlines():
        if "requests in" in line:
            r["reqs"] = int(line.split()[0])
        elif line.startswith("Requests/sec:"):
            r["rps"] = float(line.split()[1])
        elif re.match(r"^\s+50%", line):
            r["p50"] = ms(line.split()[1])
        elif re.match(r"^\s+99%", line):
            r["p99"] = ms(line.split()[1])
        elif "Non-2xx or 3xx responses:" in line:
            r["non2xx"] = int(line.split()[-1])
        elif "Socket errors:" in line:
            r["errors"] = sum(int(x) for x in re.findall(r"\d+", line))
    return r


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def fmt(v, d=0):
    return "–" if v != v else f"{v:,.{d}f}"


def ratio(a, b):
    return a / b if a == a and b == b and b else float("nan")


class Bench:
    def __init__(self, args):
        self.a = args
        self.b = Bundle(HERE)
        self.procs = Procs()
        self.work = tempfile.mkdtemp(prefix="dcr-bench-")
        os.chmod(self.work, 0o755)
        self.port = args.port_base
        self.rows = []  # dict rows of results
        cpus = sorted(os.sched_getaffinity(0))
        self.cpus = cpus
        maxw = max(args.workers)
        if len(cpus) >= 2:
            first_load = min(maxw, len(cpus) - 1)
            self.load_cpus = cpus[first_load:]
            self.sut_pool = cpus[:first_load]
        else:
            self.load_cpus, self.sut_pool = cpus, cpus
        self.oversubscribed = len(cpus) < maxw + 1
        self.fixtures = self.b.path("fixtures")
        sizes = sorted(int(m.group(1)) for f in os.listdir(self.fixtures)
                       if (m := re.fullmatch(r"rules-(\d+)\.json", f)))
        if not sizes:
            sys.exit("no fixtures/rules-N.json in the bundle")
        self.size = sizes[-1]
        self.body = open(self.b.path("conf", "body.json"), "rb").read().strip()

    # -- systems -------------------------------------------------------------------------
    def next_port(self):
        self.port += 1
        return self.port

    def sut_cpus(self, w):
        return self.sut_pool[:max(1, min(w, len(self.sut_pool)))]

    def start_upstream(self):
        d = os.path.join(self.work, "upstream")
        os.makedirs(d)
        port = self.next_port()
        workers = max(1, min(max(self.a.workers), len(self.load_cpus)))
        conf = f"""worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    {self.nginx_temp(d)}
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location = /oidc/register {{ return 201 '{{"client_id":"bench","client_secret":"x"}}'; }}
        location / {{ return 200 '{{"ok":true}}'; }}
    }}
}}
"""
        open(f"{d}/nginx.conf", "w").write(conf)
        p = self.procs.start(self.b.cmd("nginx", "-e", f"{d}/error.log", "-p", d, "-c", f"{d}/nginx.conf",
                                        "-g", "daemon off;"), self.load_cpus, f"{d}/out.log")
        self.upstream = port
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", 200, "upstream nginx", p)
        return {"name": "direct", "url": url, "proc": p, "workers": 1}

    @staticmethod
    def nginx_temp(d):
        return " ".join(f"{k}_temp_path {d}/{k[:2]};" for k in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])

    def start_gateway(self, w, binary="dcr-gateway", tag=""):
        sys_ = {"name": f"gateway{tag}", "workers": w}
        for limited in (False, True):
            d = os.path.join(self.work, f"gateway{tag}-{w}{'-limited' if limited else ''}")
            os.makedirs(d)
            shutil.copy(os.path.join(self.fixtures, f"rules-{self.size}.json"), f"{d}/rules.json")
            shutil.copy(os.path.join(self.fixtures, "country.mmdb"), f"{d}/country.mmdb")
            port, admin = self.next_port(), self.next_port()
            tmpl = open(self.b.path("conf", "gateway-limited.toml.in" if limited else "gateway.toml.in")).read()
            conf = (tmpl.replace("@DIR@", d).replace("@PORT@", str(port)).replace("@ADMIN@", str(admin))
                    .replace("@UPSTREAM@", str(self.upstream)).replace("@THREADS@", str(w)))
            open(f"{d}/gateway.toml", "w").write(conf)
            chk = subprocess.run(self.b.cmd(binary, "check", "-c", f"{d}/gateway.toml"), capture_output=True, text=True)
            if chk.returncode:
                sys.exit(f"dcr-gateway check failed:\n{chk.stdout}{chk.stderr}")
            p = self.procs.start(self.b.cmd(binary, "run", "-c", f"{d}/gateway.toml"), self.sut_cpus(w),
                                 f"{d}/gateway.log")
            wait_http(f"http://127.0.0.1:{admin}/readyz", 200, sys_["name"], p)
            key = "limited" if limited else ""
            sys_[f"url{key}"] = f"http://127.0.0.1:{port}"
            sys_[f"proc{key}"] = p
            sys_[f"admin{key}"] = f"http://127.0.0.1:{admin}"
        sys_["flood"] = True
        return sys_

    def start_bare(self, w):
        port = self.next_port()
        d = os.path.join(self.work, f"bare-{w}")
        os.makedirs(d)
        p = self.procs.start(self.b.cmd("bare_proxy", f"127.0.0.1:{port}", f"127.0.0.1:{self.upstream}", str(w), "true",
                                        "128"), self.sut_cpus(w), f"{d}/bare.log")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", 200, "bare Pingora", p)
        return {"name": "bare", "url": url, "proc": p, "workers": w}

    def start_nginx(self, w):
        d = os.path.join(self.work, f"nginx-{w}")
        os.makedirs(d)
        port, lport = self.next_port(), self.next_port()
        fx = self.fixtures
        proxy = ("proxy_pass http://idp; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
                 "proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; "
                 "proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; "
                 "proxy_set_header X-Request-Id $request_id; add_header X-Request-Id $request_id always;")
        checks = ('if ($blocked_ip) { return 403; } if ($geoip2_country_code = KP) { return 403; } '
                  'if ($http_user_agent ~ "^flood-bot/") { return 403; }')
        conf = f"""load_module {self.b.path('modules', 'ngx_http_geoip2_module.so')};
worker_processes {w};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    {self.nginx_temp(d)}
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    geoip2 {fx}/country.mmdb {{ $geoip2_country_code default=XX country iso_code; }}
    geo $blocked_ip {{ default 0; include {fx}/nginx-geo-{self.size}.conf; }}
    limit_req_zone $binary_remote_addr zone=flood:10m rate=1r/m;
    limit_req_status 429;
    upstream idp {{ server 127.0.0.1:{self.upstream}; keepalive 128; keepalive_requests 10000000; }}
    server {{ listen 127.0.0.1:{port} backlog=4096; {checks} location / {{ {proxy} }} }}
    server {{ listen 127.0.0.1:{lport} backlog=4096; {checks}
        location / {{ limit_req zone=flood nodelay; {proxy} }} }}
}}
"""
        open(f"{d}/nginx.conf", "w").write(conf)
        base = ["-e", f"{d}/error.log", "-p", d, "-c", f"{d}/nginx.conf", "-g", "daemon off;"]
        t = subprocess.run(self.b.cmd("nginx", "-t", "-q", *base), capture_output=True, text=True)
        if t.returncode:
            sys.exit(f"nginx -t failed:\n{t.stderr}")
        p = self.procs.start(self.b.cmd("nginx", *base), self.sut_cpus(w), f"{d}/out.log")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", 200, "nginx", p)
        return {"name": "nginx", "url": url, "proc": p, "urllimited": f"http://127.0.0.1:{lport}", "proclimited": p,
                "workers": w, "flood": True}

    def start_haproxy(self, w):
        d = os.path.join(self.work, f"haproxy-{w}")
        os.makedirs(d)
        port, lport = self.next_port(), self.next_port()
        fx = self.fixtures
        common = f"""    acl blocked_ip src -f {fx}/haproxy-{self.size}.acl
    http-request deny deny_status 403 if blocked_ip
    http-request deny deny_status 403 if {{ src,map_ip({fx}/haproxy-country.map) -m str KP }}
    http-request deny deny_status 403 if {{ req.hdr(user-agent) -m beg flood-bot/ }}"""
        headers = """    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-var(txn.rid) uuid
    http-request set-header X-Request-Id %[var(txn.rid)]
    http-response set-header X-Request-Id %[var(txn.rid)]
    default_backend idp"""
        conf = f"""global
    nbthread {w}
    maxconn 8000
    pidfile {d}/haproxy.pid
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 60s
    timeout server 15s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:{port}
{common}
{headers}
frontend fe_limited
    bind 127.0.0.1:{lport}
    stick-table type ip size 100k expire 1h store http_req_rate(1h)
{common}
    http-request track-sc0 src
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 1 }}
{headers}
backend idp
    server s1 127.0.0.1:{self.upstream}
"""
        open(f"{d}/haproxy.cfg", "w").write(conf)
        t = subprocess.run(self.b.cmd("haproxy", "-c", "-q", "-f", f"{d}/haproxy.cfg"), capture_output=True, text=True)
        if t.returncode:
            sys.exit(f"haproxy -c failed:\n{t.stdout}{t.stderr}")
        p = self.procs.start(self.b.cmd("haproxy", "-db", "-f", f"{d}/haproxy.cfg"), self.sut_cpus(w), f"{d}/out.log")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", 200, "HAProxy", p)
        return {"name": "haproxy", "url": url, "proc": p, "urllimited": f"http://127.0.0.1:{lport}", "proclimited": p,
                "workers": w, "flood": True}

    def sanity(self, s):
        post = {"content-type": "application/json", "user-agent": "mcp-bench/1.0"}
        code, out = http(s["url"] + POST_PATH, self.body, post)
        if code != 201 or b"client_id" not in out:
            sys.exit(f"{s['name']}: POST answered {code}: {out[:200]!r}")
        code, _ = http(s["url"] + GET_PATH)
        if code != 200:
            sys.exit(f"{s['name']}: GET answered {code}")
        if s.get("flood"):
            code, _ = http(s["url"] + POST_PATH, self.body, {**post, "user-agent": "flood-bot/1.0"})
            if code != 403:
                sys.exit(f"{s['name']}: the blocked flood's POST answered {code}, not 403")
        if s.get("urllimited"):
            for _ in range(2):
                code, _ = http(s["urllimited"] + POST_PATH, self.body, post)
            if code != 429:
                sys.exit(f"{s['name']}: the second POST to its rate-limited listener answered {code}, not 429")

    @staticmethod
    def supports(s, wl):
        return {"post": True, "get": True, "blocked": bool(s.get("flood")), "limited": bool(s.get("urllimited"))}[wl]

    # -- measurements --------------------------------------------------------------------
    def target(self, s, wl):
        if wl == "limited":
            return s["urllimited"] + POST_PATH, s["proclimited"].pid, ["-s", self.b.path("conf", "post.lua")]
        pid = s["proc"].pid if s["name"] != "direct" else 0
        if wl == "get":
            return s["url"] + GET_PATH, pid, []
        script = "flood.lua" if wl == "blocked" else "post.lua"
        return s["url"] + POST_PATH, pid, ["-s", self.b.path("conf", script)]

    def wrk(self, tag, rnd, s, wl, conns, duration):
        url, pid, script = self.target(s, wl)
        threads = max(1, min(s["workers"], len(self.load_cpus), conns))
        t0 = cpu_ticks(pid)
        out = subprocess.run(self.b.cmd("wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
                                        "--latency", *script, url),
                             capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, self.load_cpus))
        t1 = cpu_ticks(pid)
        r = parse_wrk(out.stdout)
        bad = r["reqs"] - r["non2xx"] if wl in ("blocked", "limited") else r["non2xx"]
        row = {"tag": tag, "round": rnd, "system": s["name"], "workers": s["workers"], "workload": wl, "conns": conns,
               "rps": r["rps"], "p50": r["p50"], "p99": r["p99"], "bad": bad, "errors": r["errors"],
               "cpu_pct": 100 * (t1 - t0) / HZ / duration if pid else float("nan"),
               "us_per_req": 1e6 * (t1 - t0) / HZ / r["reqs"] if pid and r["reqs"] else float("nan"),
               "reqs": r["reqs"]}
        if tag != "warmup":
            self.rows.append(row)
            log(f"  {s['name']:8} x{s['workers']} {wl:7} c={conns:<4} {r['rps']:10,.0f} req/s  p99 {r['p99']:.2f} ms  "
                f"{row['us_per_req']:.1f} us/req  bad {bad} err {r['errors']}")
        return row

    def oha(self, rnd, s, wl, pct, rate, conns):
        url, pid, _ = self.target(s, wl)
        extra = ["-m", "POST", "-T", "application/json", "-H", "user-agent: mcp-bench/1.0", "-D",
                 self.b.path("conf", "body.json")] if wl == "post" else []
        t0 = cpu_ticks(pid)
        out = subprocess.run(self.b.cmd("oha", "-z", f"{self.a.duration}s", "-c", str(conns), "-q", str(rate),
                                        "--latency-correction", "-w", "--no-tui", "--output-format", "json", *extra, url),
                             capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, self.load_cpus))
        t1 = cpu_ticks(pid)
        try:
            j = json.loads(out.stdout)
        except json.JSONDecodeError:
            log(f"oha gave no JSON: {out.stderr[:300]}")
            return
        codes = j.get("statusCodeDistribution") or {}
        n = sum(codes.values())
        row = {"tag": f"fixed{pct}", "round": rnd, "system": s["name"], "workers": 1, "workload": wl, "conns": conns,
               "rps": j["summary"]["requestsPerSec"], "p50": j["latencyPercentiles"]["p50"] * 1000,
               "p99": j["latencyPercentiles"]["p99"] * 1000,
               "bad": sum(v for k, v in codes.items() if not k.startswith("2")),
               "errors": sum((j.get("errorDistribution") or {}).values()),
               "cpu_pct": 100 * (t1 - t0) / HZ / self.a.duration if pid else float("nan"),
               "us_per_req": 1e6 * (t1 - t0) / HZ / n if pid and n else float("nan"), "reqs": n, "rate": rate}
        self.rows.append(row)
        log(f"  fixed {wl} {pct}% {rate}/s {s['name']:8} p50 {row['p50']:.2f} ms p99 {row['p99']:.2f} ms "
            f"{row['us_per_req']:.1f} us/req")

    def med(self, key, **where):
        return median([r[key] for r in self.rows if all(r.get(k) == v for k, v in where.items())])

    # -- the run -------------------------------------------------------------------------
    def run(self):
        a = self.a
        t_start = time.time()
        log(f"CPUs {self.cpus}: systems on {self.sut_pool}, load on {self.load_cpus}"
            + (" (fewer CPUs than the largest worker count + 1: multi-worker numbers are not scaling numbers)"
               if self.oversubscribed else ""))
        direct = self.start_upstream()
        self.sanity_direct(direct)
        mem = {}
        for w in a.workers:
            log(f"{w} worker(s): starting the systems on CPUs {self.sut_cpus(w)}")
            systems = []
            for name in a.systems:
                s = {"gateway": self.start_gateway, "bare": self.start_bare, "nginx": self.start_nginx,
                     "haproxy": self.start_haproxy}[name](w)
                self.sanity(s)
                systems.append(s)
            if w == 1 and "direct" in a.direct:
                systems.append(direct)
            for s in systems:
                for wl in a.workloads:
                    if self.supports(s, wl):
                        self.wrk("warmup", 0, s, wl, min(16, a.conns * w), 2)
            for rnd in range(1, a.rounds + 1):
                for wl in a.workloads:
                    log(f"round {rnd}/{a.rounds}, {wl}, {w} worker(s), {a.conns * w} connections")
                    for s in systems:
                        if self.supports(s, wl):
                            self.wrk("main", rnd, s, wl, a.conns * w, a.duration)
            for s in systems:
                if s["name"] != "direct":
                    mem[(s["name"], w)] = mem_kb(s["proc"].pid, "VmHWM")
            if w == 1 and a.fixed_rate:
                self.fixed_rate(systems)
            for s in systems:
                if s["name"] != "direct":
                    self.procs.stop(s["proc"])
                    if s.get("proclimited") and s["proclimited"] is not s["proc"]:
                        self.procs.stop(s["proclimited"])
        phases = self.phases() if self.b.has("dcr-gateway-phases") and a.phases else None
        self.report(mem, phases, time.time() - t_start)

    def sanity_direct(self, direct):
        code, _ = http(direct["url"] + POST_PATH, self.body, {"content-type": "application/json"})
        if code != 201:
            sys.exit(f"upstream: POST answered {code}")

    def fixed_rate(self, systems):
        for wl in [w for w in ("post", "get") if w in self.a.workloads]:
            cap = self.med("rps", tag="main", system="gateway", workers=1, workload=wl)
            if cap != cap:
                continue
            for pct in self.a.fixed_rate:
                rate = max(1, int(cap * pct / 100))
                for rnd in range(1, self.a.rounds + 1):
                    for s in systems:
                        if s["name"] in ("direct", "gateway", "bare", "nginx"):
                            self.oha(rnd, s, wl, pct, rate, self.a.conns)

    def phases(self):
        log("phases: the phase-timing gateway, 1 worker")
        s = self.start_gateway(1, binary="dcr-gateway-phases", tag="-phases")
        s["name"] = "gateway-phases"
        self.sanity(s)
        table = {}
        for wl in self.a.workloads:
            admin = s["adminlimited"] if wl == "limited" else s["admin"]
            self.wrk("warmup", 0, s, wl, self.a.conns, 2)
            per = {}
            procs = []
            for rnd in range(1, self.a.rounds + 1):
                m0 = scrape_phases(admin)
                row = self.wrk("phases", rnd, s, wl, self.a.conns, self.a.duration)
                m1 = scrape_phases(admin)
                n = row["reqs"]
                if not n:
                    continue
                for ph in m1:
                    per.setdefault(ph, []).append(1e6 * (m1[ph][0] - m0.get(ph, (0, 0))[0]) / n)
                    per.setdefault(ph + "#calls", []).append((m1[ph][1] - m0.get(ph, (0, 0))[1]) / n)
                procs.append(row["us_per_req"])
            table[wl] = {k: median(v) for k, v in per.items()}
            table[wl]["#process"] = median(procs)
        overhead = float("nan")
        st, body = http(s["admin"] + "/metrics")
        m = re.search(rb"^dcr_gateway_phase_timer_overhead_seconds (\S+)", body, re.M)
        if m:
            overhead = float(m.group(1)) * 1e6
        self.procs.stop(s["proc"])
        self.procs.stop(s["proclimited"])
        return table, overhead

    # -- report --------------------------------------------------------------------------
    def report(self, mem, phases, elapsed):
        a = self.a
        out = a.out or HERE
        os.makedirs(out, exist_ok=True)
        keys = ["tag", "round", "system", "workers", "workload", "conns", "rps", "p50", "p99", "bad", "errors",
                "cpu_pct", "us_per_req", "reqs", "rate"]
        with open(os.path.join(out, "results.tsv"), "w") as f:
            f.write("\t".join(keys) + "\n")
            for r in self.rows:
                f.write("\t".join(str(r.get(k, "")) for k in keys) + "\n")
        manifest = open(self.b.path("MANIFEST")).readline().strip() if os.path.exists(self.b.path("MANIFEST")) else "?"
        model = "?"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        L = []
        L.append("# dcr-gateway benchmark (bench/bundle.sh runner)\n")
        L.append(f"- **Bundle:** {manifest}")
        L.append(f"- **Command:** `python3 run.py {' '.join(sys.argv[1:])}`; {elapsed:.0f} s")
        L.append(f"- **Machine:** {model}, {os.cpu_count()} CPUs ({len(self.cpus)} usable), Linux {platform.release()}; "
                 f"load average at the end {' '.join(load)}")
        L.append(f"- **Pinning:** a system with W workers on the first W of CPUs {self.sut_pool} (sched_setaffinity); "
                 f"wrk, oha and the upstream nginx on CPUs {self.load_cpus}" + (
                     " — **fewer CPUs than the largest worker count + 1: the multi-worker systems share their CPUs; "
                     "their numbers show overhead, not scaling**" if self.oversubscribed else ""))
        L.append(f"- **Load:** wrk, {a.conns} connections per worker, min(W, {len(self.load_cpus)}) threads, "
                 f"{a.duration} s × {a.rounds} rounds, medians. Rule list: {self.size:,} CIDRs + GeoIP (every system).")
        L.append("- **Workloads:** post = `POST /oidc/register` (566-byte registration, validated by the gateway); get = "
                 "`GET /authorize` pass-through; blocked = the POST from `User-Agent: flood-bot/1.0`, 403 from every "
                 "system; limited = the POST against one registration per client IP per hour (429).\n")
        L.append("## Throughput, CPU per request, p99 (closed loop)\n")
        names = [n for n in a.systems]
        L.append("| workload | workers | conns | " + " | ".join(f"{n} req/s" for n in names) + " | "
                 + " | ".join(f"{n} CPU µs/req" for n in names) + " | " + " | ".join(f"{n} p99 ms" for n in names)
                 + " | bad answers |")
        L.append("|---|---:|---:|" + "---:|" * (3 * len(names) + 1))
        for wl in a.workloads:
            for w in a.workers:
                c = a.conns * w
                cells = []
                for key, d in (("rps", 0), ("us_per_req", 1), ("p99", 2)):
                    for n in names:
                        cells.append(fmt(self.med(key, tag="main", system=n, workers=w, workload=wl), d))
                bad = sum(r["bad"] + r["errors"] for r in self.rows
                          if r["tag"] == "main" and r["workers"] == w and r["workload"] == wl)
                L.append(f"| {wl} | {w} | {c} | " + " | ".join(cells) + f" | {bad} |")
        if "direct" in a.direct:
            L.append("\nThe upstream alone (direct, 1 worker): " + ", ".join(
                f"{wl} {fmt(self.med('rps', tag='main', system='direct', workload=wl))} req/s"
                for wl in ("post", "get") if wl in a.workloads))
        if len(a.workers) > 1:
            hi = max(a.workers)
            L.append(f"\n### Scaling: req/s with {hi} workers over req/s with 1\n")
            L.append("| workload | " + " | ".join(names) + " |")
            L.append("|---|" + "---:|" * len(names))
            for wl in a.workloads:
                L.append(f"| {wl} | " + " | ".join(
                    fmt(ratio(self.med("rps", tag="main", system=n, workers=hi, workload=wl),
                              self.med("rps", tag="main", system=n, workers=1, workload=wl)), 2) for n in names) + " |")
        L.append("\n### Gateway over the others (req/s, same workload and workers)\n")
        others = [n for n in names if n != "gateway"]
        L.append("| workload | workers | " + " | ".join(f"/{n}" for n in others) + " |")
        L.append("|---|---:|" + "---:|" * len(others))
        for wl in a.workloads:
            for w in a.workers:
                g = self.med("rps", tag="main", system="gateway", workers=w, workload=wl)
                L.append(f"| {wl} | {w} | " + " | ".join(
                    fmt(ratio(g, self.med("rps", tag="main", system=n, workers=w, workload=wl)), 3) for n in others) + " |")
        fixed = [r for r in self.rows if r["tag"].startswith("fixed")]
        if fixed:
            L.append("\n## Fixed rate (oha --latency-correction, 1 worker each)\n")
            L.append(f"{a.conns} connections; the rate is 25 % / 50 % of the gateway's median one-worker req/s for the "
                     "workload.\n")
            L.append("| workload | rate req/s | system | p50 ms | p99 ms | CPU µs/req | bad |")
            L.append("|---|---:|---|---:|---:|---:|---:|")
            for wl in ("post", "get"):
                for pct in a.fixed_rate:
                    rs = [r for r in fixed if r["workload"] == wl and r["tag"] == f"fixed{pct}"]
                    if not rs:
                        continue
                    for n in ["direct", "gateway", "bare", "nginx"]:
                        sel = [r for r in rs if r["system"] == n]
                        if not sel:
                            continue
                        L.append(f"| {wl} | {sel[0]['rate']} ({pct} %) | {n} | {fmt(median([r['p50'] for r in sel]), 2)} | "
                                 f"{fmt(median([r['p99'] for r in sel]), 2)} | "
                                 f"{fmt(median([r['us_per_req'] for r in sel]), 1)} | "
                                 f"{sum(r['bad'] + r['errors'] for r in sel)} |")
        if phases:
            table, overhead = phases
            wls = [wl for wl in a.workloads if wl in table]
            L.append("\n## Where each microsecond goes (gateway built with --features phase-timing, 1 worker)\n")
            L.append(f"Thread CPU µs per request in each phase (exclusive of nested phases); one clock read costs "
                     f"{fmt(overhead, 3)} µs, two per measurement.\n")
            L.append("| phase | " + " | ".join(wls) + " |")
            L.append("|---|" + "---:|" * len(wls))
            for ph in PHASE_ORDER:
                L.append(f"| {ph} | " + " | ".join(fmt(table[wl].get(ph, float('nan')), 2) for wl in wls) + " |")
            sums = {wl: sum(v for k, v in table[wl].items() if not k.startswith("#") and "#" not in k and v == v)
                    for wl in wls}
            L.append("| **sum of the phases** | " + " | ".join(fmt(sums[wl], 2) for wl in wls) + " |")
            L.append("| **process CPU** | " + " | ".join(fmt(table[wl]["#process"], 2) for wl in wls) + " |")
            L.append("| **outside the phases** | " + " | ".join(fmt(table[wl]["#process"] - sums[wl], 2) for wl in wls)
                     + " |")
        if mem:
            L.append("\n## Memory (VmHWM after the runs, MiB)\n")
            L.append("| system | " + " | ".join(f"{w} worker(s)" for w in a.workers) + " |")
            L.append("|---|" + "---:|" * len(a.workers))
            for n in names:
                L.append(f"| {n} | " + " | ".join(fmt(mem.get((n, w), float('nan')) / 1024, 1) for w in a.workers) + " |")
        L.append("")
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write("\n".join(L))
        log(f"wrote {os.path.join(out, 'report.md')} and results.tsv")


def scrape_phases(admin):
    st, body = http(admin + "/metrics")
    out = {}
    for m in re.finditer(rb'^dcr_gateway_phase_(cpu_seconds|calls)_total\{phase="([a-z_]+)"\} (\S+)', body, re.M):
        kind, ph, v = m.group(1), m.group(2).decode(), float(m.group(3))
        s, c = out.get(ph, (0.0, 0.0))
        out[ph] = (v, c) if kind == b"cpu_seconds" else (s, v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda t: [x for x in t.split(",") if x]  # noqa: E731
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; cells are medians (default 2)")
    ap.add_argument("--workers", type=lambda t: [int(x) for x in csv(t)], default=[1, 4], help="default 1,4")
    ap.add_argument("--conns", type=int, default=64, help="wrk connections per worker (default 64)")
    ap.add_argument("--workloads", type=csv, default=WORKLOADS, help="default post,get,blocked,limited")
    ap.add_argument("--systems", type=csv, default=SYSTEMS, help="default gateway,bare,nginx,haproxy")
    ap.add_argument("--fixed-rate", type=lambda t: [int(x) for x in csv(t)], default=[25, 50],
                    help="percentages of the gateway's one-worker capacity (default 25,50)")
    ap.add_argument("--no-fixed-rate", dest="fixed_rate", action="store_const", const=[])
    ap.add_argument("--no-phases", dest="phases", action="store_false", help="skip the phase-timing gateway")
    ap.add_argument("--no-direct", dest="direct", action="store_const", const=[], default=["direct"])
    ap.add_argument("--port-base", type=int, default=28000)
    ap.add_argument("--out", help="folder for report.md and results.tsv (default: next to run.py)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    a = ap.parse_args()
    for wl in a.workloads:
        if wl not in WORKLOADS:
            ap.error(f"unknown workload {wl}")
    for s in a.systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s}")
    if "gateway" not in a.systems:
        ap.error("the gateway is the system the report is about")
    if 1 not in a.workers:
        a.workers = [1] + a.workers
    bench = Bench(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        bench.run()
    finally:
        bench.procs.stop_all()
        if a.keep:
            log(f"work folder kept: {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
