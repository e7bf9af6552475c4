#!/usr/bin/env python3
"""SCTP over raw sockets, for the e2e tests.

The test kernel has no SCTP sockets (CONFIG_IP_SCTP unset), but a raw socket
of protocol 132 sends and receives SCTP packets built here by hand, and with
one open the kernel delivers SCTP packets to it instead of answering
"protocol unreachable". Only the first exchange of an association is played:
INIT and INIT ACK, which is what a Service must translate.

  sctp.py server --name NAME --port P
      Answers every INIT to port P with an INIT ACK whose State Cookie is
      "NAME <source ip>:<source port>", the source it saw (masquerade shows
      there). Prints "ready" once listening.
  sctp.py client --to IP:PORT --count N [--timeout-ms T]
      N INITs, each from a new source port; prints one JSON line
      {"attempts": [...]} as test/box/client.js does: ok, backend, seenSrc,
      from (the INIT ACK's source), error ("timeout", "bad-crc"), ms.

Both sides check the CRC32c of every packet and ignore one that is wrong,
as an SCTP stack does: a NAT that breaks the checksum shows as a timeout
(the client reports "bad-crc" when that is why). Loops are bounded by count
and time.
"""

import json
import os
import random
import socket
import struct
import sys
import time

IPPROTO_SCTP = 132
INIT, INIT_ACK = 1, 2
STATE_COOKIE = 7


def _table():
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


TABLE = _table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def packet(sport, dport, vtag, chunk):
    """Common header + chunk, with the CRC32c stored least significant byte first (as Linux does)."""
    body = struct.pack("!HHII", sport, dport, vtag, 0) + chunk
    return body[:8] + struct.pack("<I", crc32c(body)) + body[12:]


def init_chunk(chunk_type, tag, params=b""):
    """INIT or INIT ACK: initiate tag, a_rwnd, outbound and inbound streams, initial TSN, parameters."""
    fixed = struct.pack("!IIHHI", tag, 65536, 1, 1, tag)
    return struct.pack("!BBH", chunk_type, 0, 4 + len(fixed) + len(params)) + fixed + params


def parse(raw):
    """(source ip, sctp fields, chunk type, chunk body, crc ok) of a received IPv4 packet, or None."""
    ihl = (raw[0] & 0x0F) * 4
    total = struct.unpack("!H", raw[2:4])[0]
    sctp = raw[ihl:total]
    if len(sctp) < 16:
        return None
    sport, dport, vtag, crc = struct.unpack("!HHII", sctp[:12])
    crc_ok = struct.unpack("<I", sctp[8:12])[0] == crc32c(sctp[:8] + b"\0\0\0\0" + sctp[12:])
    ctype, _, clen = struct.unpack("!BBH", sctp[12:16])
    src = socket.inet_ntoa(raw[12:16])
    return src, sport, dport, vtag, ctype, sctp[16 : 12 + clen], crc_ok


def arg(name, default=""):
    if f"--{name}" in sys.argv:
        i = sys.argv.index(f"--{name}")
        if i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return default


def server():
    name = arg("name", "sctp")
    port = int(arg("port"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    print("ready", flush=True)
    while True:
        got = parse(sock.recv(65535))
        if not got:
            continue
        src, sport, dport, _, ctype, body, crc_ok = got
        if dport != port or ctype != INIT:
            continue
        if not crc_ok:
            print(f"bad crc from {src}:{sport}", file=sys.stderr, flush=True)
            continue
        peer_tag = struct.unpack("!I", body[:4])[0]
        cookie = f"{name} {src}:{sport}".encode()
        param = struct.pack("!HH", STATE_COOKIE, 4 + len(cookie)) + cookie
        param += b"\0" * (-len(param) % 4)
        reply = packet(port, sport, peer_tag, init_chunk(INIT_ACK, random.randint(1, 2**32 - 1), param))
        sock.sendto(reply, (src, 0))


def client():
    host, port = arg("to").rsplit(":", 1)
    port = int(port)
    count = min(max(int(arg("count", "1")), 1), 1000)
    timeout = min(max(int(arg("timeout-ms", "1000")), 1), 60000) / 1000
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    attempts = []
    for _ in range(count):
        sport = random.randint(20000, 29999)
        tag = random.randint(1, 2**32 - 1)
        t0 = time.monotonic()
        sock.sendto(packet(sport, port, 0, init_chunk(INIT, tag)), (host, 0))
        result = {"ok": False, "error": "timeout"}
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                got = parse(sock.recv(65535))
            except socket.timeout:
                break
            if not got:
                continue
            src, rsport, dport, vtag, ctype, body, crc_ok = got
            if dport != sport or ctype != INIT_ACK:
                continue
            if not crc_ok:
                result = {"ok": False, "error": "bad-crc", "from": f"{src}:{rsport}"}
                continue
            if vtag != tag:
                continue
            # The State Cookie parameter after the 16 fixed bytes: "NAME ip:port".
            ptype, plen = struct.unpack("!HH", body[16:20])
            backend, seen = body[20 : 16 + plen].decode().split(" ") if ptype == STATE_COOKIE else ("", "")
            result = {"ok": True, "backend": backend, "seenSrc": seen, "from": f"{src}:{rsport}"}
            break
        result["ms"] = round((time.monotonic() - t0) * 1000)
        attempts.append(result)
    print(json.dumps({"attempts": attempts}), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "server":
        server()
    elif cmd == "client":
        client()
    else:
        sys.exit("usage: sctp.py server --name NAME --port P | client --to IP:PORT --count N [--timeout-ms T]")
