"""Clients for bench/scale.sh: start-up time, login flood, idle connections,
busy sessions.

    python3 bench/scale_client.py ready URL -- CMD...      exec CMD, time until URL answers 200
    python3 bench/scale_client.py logins GATEWAY N CONC GW_PID IDP_PID
    python3 bench/scale_client.py idle HOST PORT N PATH COOKIE PID...
    python3 bench/scale_client.py busy HOST PORT PATH COOKIE_FILE PID...
    python3 bench/scale_client.py rss PID...

Each prints one line of `key=value` figures for bench/scale.sh. Standard
library only; every loop is bounded in count and time.
"""

import http.client
import multiprocessing
import os
import resource
import select
import socket
import subprocess
import sys
import time
import urllib.parse


def rss_kib(pids):
    """VmRSS summed over the processes and their children (nginx's workers)."""
    seen, todo, total = set(), list(pids), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            continue
        todo += children(pid)
    return total


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # The fourth field after the `(comm)` is the parent.
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return found


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready(url, cmd, timeout=30.0):
    """Milliseconds from exec to the first 200 from URL; the process keeps running."""
    parsed = urllib.parse.urlsplit(url)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - start < timeout:
        try:
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=1)
            conn.request("GET", parsed.path or "/")
            if conn.getresponse().status == 200:
                took = (time.perf_counter() - start) * 1000
                print(f"ready_ms={took:.1f} pid={proc.pid}")
                return
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit(f"{cmd[0]} exited with {proc.returncode} before {url} answered")
        time.sleep(0.0005)
    proc.kill()
    sys.exit(f"{url} did not answer 200 within {timeout} s")


def cookies_of(response):
    """name=value of every Set-Cookie."""
    return [v.split(";", 1)[0] for k, v in response.getheaders() if k.lower() == "set-cookie"]


def one_login(gw, idp):
    """The authorization code flow as a browser runs it, minus the GET of the
    login form (the IdP's page, not the gateway's work). Returns the session cookie."""
    gw.request("GET", "/auth/login?return_to=/")
    r = gw.getresponse()
    r.read()
    if r.status != 302:
        raise RuntimeError(f"/auth/login: {r.status}")
    login_cookies = cookies_of(r)
    authorize = urllib.parse.urlsplit(r.getheader("Location"))
    form = authorize.query + "&username=alice&password=alice"
    idp.request("POST", "/authorize", form, {"Content-Type": "application/x-www-form-urlencoded"})
    r = idp.getresponse()
    r.read()
    if r.status not in (302, 303):
        raise RuntimeError(f"IdP /authorize: {r.status}")
    callback = urllib.parse.urlsplit(r.getheader("Location"))
    gw.request("GET", f"{callback.path}?{callback.query}", headers={"Cookie": "; ".join(login_cookies)})
    r = gw.getresponse()
    r.read()
    session = [c for c in cookies_of(r) if c.split("=", 1)[1]]
    if r.status != 302 or not session:
        raise RuntimeError(f"/auth/callback: {r.status}, cookies {cookies_of(r)}")
    return session


def login_worker(args):
    gateway, issuer, count = args
    g, i = urllib.parse.urlsplit(gateway), urllib.parse.urlsplit(issuer)
    gw = http.client.HTTPConnection(g.hostname, g.port, timeout=10)
    idp = http.client.HTTPConnection(i.hostname, i.port, timeout=10)
    for _ in range(count):
        one_login(gw, idp)
    return count


def logins(gateway, total, concurrency, gw_pid, idp_pid):
    issuer = discover_issuer(gateway)
    per = [total // concurrency + (1 if n < total % concurrency else 0) for n in range(concurrency)]
    before = {p: cpu_seconds(p) for p in (gw_pid, idp_pid)}
    rss_before = rss_kib([gw_pid])
    clients_before = os.times()
    start = time.perf_counter()
    with multiprocessing.Pool(concurrency) as pool:
        done = sum(pool.map(login_worker, [(gateway, issuer, n) for n in per]))
    wall = time.perf_counter() - start
    clients_after = os.times()
    gw_cpu = cpu_seconds(gw_pid) - before[gw_pid]
    idp_cpu = cpu_seconds(idp_pid) - before[idp_pid]
    client_cpu = (clients_after.children_user + clients_after.children_system) - (
        clients_before.children_user + clients_before.children_system
    )
    total_cpu = gw_cpu + idp_cpu + client_cpu
    print(
        f"logins={done} seconds={wall:.2f} logins_per_s={done / wall:.0f} "
        f"gateway_cpu_us_per_login={gw_cpu / done * 1e6:.0f} "
        f"idp_cpu_us_per_login={idp_cpu / done * 1e6:.0f} "
        f"client_cpu_us_per_login={client_cpu / done * 1e6:.0f} "
        f"gateway_share={gw_cpu / total_cpu * 100:.0f}% "
        f"rss_growth_bytes_per_session={(rss_kib([gw_pid]) - rss_before) * 1024 / done:.0f}"
    )


def discover_issuer(gateway):
    """The IdP's origin, from where /auth/login sends the browser."""
    g = urllib.parse.urlsplit(gateway)
    conn = http.client.HTTPConnection(g.hostname, g.port, timeout=10)
    conn.request("GET", "/auth/login?return_to=/")
    r = conn.getresponse()
    r.read()
    location = urllib.parse.urlsplit(r.getheader("Location") or "")
    if r.status != 302 or not location.netloc:
        sys.exit(f"/auth/login did not redirect to the IdP: {r.status}")
    return f"{location.scheme}://{location.netloc}"


def idle(host, port, count, path, cookie, pids, timeout=120.0):
    """Opens COUNT keep-alive connections, one request each, all left open at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1024)), hard))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if cookie:
        request += f"Cookie: {cookie}\r\n"
    request = (request + "\r\n").encode()
    before = rss_kib(pids)
    deadline = time.monotonic() + timeout
    socks = []
    # In batches, so the listen backlog never overflows; poll, not select,
    # since the descriptors go past select's 1024.
    for start in range(0, count, 500):
        poll, pending = select.poll(), {}
        for _ in range(min(500, count - start)):
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(request)
            socks.append(s)
            pending[s.fileno()] = (s, b"")
            poll.register(s, select.POLLIN)
        while pending:
            if time.monotonic() > deadline:
                sys.exit(f"idle: {len(pending)} answers missing after {timeout} s")
            for fd, _ in poll.poll(1000):
                s, data = pending[fd]
                data += s.recv(65536)
                if not data:
                    sys.exit("idle: a connection was closed before its answer")
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep and not head.startswith(b"HTTP/1.1 200"):
                    sys.exit(f"idle: answer {head.splitlines()[0]!r}")
                length = next(
                    (int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")),
                    None,
                )
                if sep and length is not None and len(body) >= length:
                    del pending[fd]
                    poll.unregister(fd)
                else:
                    pending[fd] = (s, data)
    # Every connection has had its answer and sits idle now; after a moment's
    # quiet (long enough for the gateway to park them: quiet for 1 s, checked
    # every 1 s), none may have been closed (a closed one polls readable).
    time.sleep(float(os.environ.get("IDLE_SETTLE", "3")))
    poll = select.poll()
    for s in socks:
        poll.register(s, select.POLLIN)
    if poll.poll(0):
        sys.exit("idle: the server closed idle connections")
    after = rss_kib(pids)
    print(
        f"connections={count} rss_before_kib={before} rss_after_kib={after} "
        f"bytes_per_connection={(after - before) * 1024 / count:.0f}"
    )
    for s in socks:
        s.close()


def busy(host, port, path, cookie_file, pids, timeout=600.0):
    """One proxied GET per session of COOKIE_FILE (`name=value` a line), one
    after the other on one keep-alive connection; then the RSS."""
    with open(cookie_file) as f:
        cookies = [line.strip() for line in f if line.strip()]
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for cookie in cookies:
        if time.monotonic() > deadline:
            sys.exit(f"busy: not done after {timeout} s")
        conn.request("GET", path, headers={"Cookie": cookie})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"busy: {path} answered {r.status}")
    conn.close()
    print(f"sessions={len(cookies)} rss_kib={rss_kib(pids)}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ready":
        ready(args[0], args[args.index("--") + 1 :])
    elif cmd == "logins":
        logins(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]))
    elif cmd == "idle":
        idle(args[0], int(args[1]), int(args[2]), args[3], args[4], [int(p) for p in args[5:]])
    elif cmd == "busy":
        busy(args[0], int(args[1]), args[2], args[3], [int(p) for p in args[4:]])
    elif cmd == "rss":
        print(f"rss_kib={rss_kib([int(p) for p in args])}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
