#!/usr/bin/env python3
"""Before/after figures for issue 11 findings 8 and 9 at the CLI level (loopback only; run it in
`unshare -n` with `ip link set lo up` to be sure nothing leaves the machine).

usage: python3 tests/measure/issue11_cli.py PATH/TO/netswitch
The "before" binary: `git checkout 1487ae5 -- src && cargo build --bin netswitch`, copy
target/debug/netswitch away, then `git checkout HEAD -- src`.
"""
import json, os, socket, struct, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1]

def start(config, extra=()):
    f = tempfile.NamedTemporaryFile('w', suffix='.json', delete=False)
    json.dump(config, f); f.close()
    p = subprocess.Popen([BIN, 'socks', '--config', f.name, *extra], stderr=subprocess.PIPE, text=True)
    lines, found = [], threading.Event()
    addr = []
    def pump():
        for line in p.stderr:
            lines.append(line)
            if 'listening on ' in line and not addr:
                addr.append(line.split('listening on ')[1].split()[0]); found.set()
        found.set()
    threading.Thread(target=pump, daemon=True).start()
    found.wait(10)
    os.unlink(f.name)
    return p, (addr[0] if addr else None), lines

def stop(p):
    p.terminate()
    try: p.wait(5)
    except subprocess.TimeoutExpired: p.kill()

def parse(addr):
    host, port = addr.rsplit(':', 1)
    return host.strip('[]'), int(port)

def connect_request(port):
    return bytes([5, 1, 0, 1, 127, 0, 0, 1]) + struct.pack('>H', port)

def socks_connect(addr, port):
    s = socket.create_connection(parse(addr), timeout=10)
    s.sendall(b'\x05\x01\x00'); assert s.recv(2) == b'\x05\x00'
    s.sendall(connect_request(port)); reply = s.recv(10)
    return s, reply

def listener():
    l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(16); return l

# Finding 8: values the kernel refuses.
for key, value in [('tcp_keep_alive', '10h'), ('tcp_user_timeout', '25d')]:
    p, addr, lines = start({key: value, 'socks': {'listen': '127.0.0.1:0'}})
    if addr is None:
        p.wait(5); print(f'8 {key}={value}: refused at start, exit {p.returncode}: {"".join(lines).strip()}')
        continue
    l = listener(); codes = []
    for _ in range(5):
        s, reply = socks_connect(addr, l.getsockname()[1]); codes.append(reply[1]); s.close()
    print(f'8 {key}={value}: started; 5 CONNECTs to a live listener got reply codes {codes}')
    stop(p)

# Finding 8: a duration that overflows clock arithmetic.
p, addr, lines = start({'half_close_timeout': '500000000000y', 'socks': {'listen': '127.0.0.1:0'}})
if addr is None:
    p.wait(5); print(f'8 half_close_timeout=500000000000y: refused at start, exit {p.returncode}: {"".join(lines).strip()}')
else:
    l = listener()
    def serve():
        c, _ = l.accept(); c.recv(100); time.sleep(0.2); c.sendall(b'late'); time.sleep(0.2); c.close()
    threading.Thread(target=serve, daemon=True).start()
    s, reply = socks_connect(addr, l.getsockname()[1])
    s.sendall(b'x'); s.shutdown(socket.SHUT_WR)
    data = b''
    try:
        while True:
            chunk = s.recv(100)
            if not chunk: break
            data += chunk
    except OSError as e:
        data += f' <{e}>'.encode()
    time.sleep(0.3)
    panics = [l_ for l_ in lines if 'panicked' in l_]
    print(f'8 half_close_timeout=500000000000y: started; half-closed connection got {data!r}; panics logged: {len(panics)} {panics[:1]}')
    stop(p)

# Finding 9: non-loopback without users.
p, addr, lines = start({'socks': {'listen': '[::ffff:127.0.0.1]:0', 'allow_non_loopback': True}})
if addr is None:
    p.wait(5); print(f'9 non-loopback without users: refused, exit {p.returncode}: {"".join(lines).strip()}')
else:
    warned = any('WARN' in x for x in lines)
    print(f'9 non-loopback without users: STARTED on {addr}; warning logged: {warned}')
    stop(p)

# Finding 9: the username of a failed login.
p, addr, lines = start({'socks': {'listen': '127.0.0.1:0'}}, ['--user', 'u', '--password', 'p'])
s = socket.create_connection(parse(addr), timeout=10)
s.sendall(b'\x05\x01\x02'); s.recv(2)
name = b'my-secret-password'
s.sendall(bytes([1, len(name)]) + name + b'\x01p'); status = s.recv(2); s.close()
time.sleep(0.3)
leaked = [x.strip() for x in lines if 'my-secret-password' in x]
print(f'9 failed login status {list(status)}; log lines with the username text: {len(leaked)} {leaked[:1]}')
stop(p)
