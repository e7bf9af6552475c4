/**
 * Client run inside a pod, node or the outside namespace; prints one JSON
 * line `{"attempts":[...]}` for the test to assert on.
 *
 *   tcp  --to IP:PORT --count N [--timeout-ms T] [--hold-ms H] [--peer-after-ms P]
 *        N sequential connections, one HTTP request each (then held open H ms);
 *        getpeername() asked P ms after the response (default at once).
 *   udp  --to IP:PORT --count N [--timeout-ms T] [--interval-ms I] [--same-socket | --connect] [--size B]
 *        N requests, each on a new socket (connected with --connect), or all
 *        on one connected socket (--same-socket; every I ms, default 50).
 *        --size: a B-byte datagram, for a --udp-mirror echo port; the
 *        attempt is ok only if the reply carries those bytes back intact.
 *   hold --to IP:PORT --duration-ms D --interval-ms I [--timeout-ms T]
 *        one TCP connection, a request every I ms for D ms; prints
 *        `connected` first, so a test running it in the background knows
 *        when the connection exists. Stops at the first failure.
 *
 * --bind IP picks the source address; --sport PORT the UDP source port (so
 * separate runs continue one flow).
 *
 * Each attempt is {ok, backend, seenSrc, peer, error, ms}: backend is the
 * echo server's name, seenSrc the source address it saw (masquerade shows
 * here), peer the address getpeername() gives the client's socket,
 * error is ECONNREFUSED (refused at once: RST or ICMP port unreachable),
 * "timeout" (nothing came back: a DROP), or another errno. UDP attempts
 * also report `from`, the reply's source as recvfrom() saw it.
 * Every loop is bounded by count and time.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

export interface Attempt {
  ok: boolean;
  backend?: string;
  seenSrc?: string;
  /** UDP: where the reply came from, as recvfrom() reported it. */
  from?: string;
  /** TCP, connected UDP: the peer getpeername() reports (IP:PORT or [IPv6]:PORT). */
  peer?: string;
  error?: string;
  ms: number;
  /** TCP: microseconds from connect() to the response read (connect, one request, close). */
  us?: number;
  /** UDP --size: bytes the mirror sent back (equal to what was sent when ok). */
  echoed?: number;
}

const MAX_COUNT = 10_000;
const MAX_DURATION_MS = 120_000;

function arg(name: string, def = ''): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? def) : def;
}

function num(name: string, def: number, min: number, max: number): number {
  const v = Number(arg(name, String(def)));
  if (!Number.isFinite(v)) throw new Error(`--${name} must be a number`);
  return Math.min(Math.max(v, min), max);
}

/** IPv4:PORT or [IPv6]:PORT. */
function target(): { host: string; port: number } {
  const m = /^(?:(\d+\.\d+\.\d+\.\d+)|\[([0-9a-fA-F:.]+)\]):(\d+)$/.exec(arg('to'));
  if (!m) throw new Error('--to IP:PORT or [IPv6]:PORT required');
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** The echo server's reply: `NAME <ip>:<port>`. */
function parseBody(text: string): { backend: string; seenSrc: string } {
  const [backend, seenSrc] = text.trim().split(/\s+/);
  return { backend: backend ?? '', seenSrc: seenSrc ?? '' };
}

const REQUEST = 'GET / HTTP/1.1\r\nHost: weir\r\nConnection: keep-alive\r\n\r\n';

/** Send one request and read one Content-Length framed response. */
function httpExchange(sock: net.Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => done(new Error('timeout')), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const head = buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const m = /content-length:\s*(\d+)/i.exec(buf.slice(0, head));
      const len = m ? Number(m[1]) : 0;
      if (buf.length - head - 4 >= len) done(null, buf.slice(head + 4, head + 4 + len));
    };
    const onErr = (e: NodeJS.ErrnoException): void => done(new Error(e.code ?? e.message));
    const onClose = (): void => done(new Error('closed'));
    function done(err: Error | null, body?: string): void {
      clearTimeout(t);
      sock.off('data', onData);
      sock.off('error', onErr);
      sock.off('close', onClose);
      if (err) reject(err);
      else resolve(body!);
    }
    sock.on('data', onData);
    sock.on('error', onErr);
    sock.on('close', onClose);
    sock.write(REQUEST);
  });
}

function connect(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const bind = arg('bind');
    const sock = net.connect({ host, port, ...(bind ? { localAddress: bind } : {}) });
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error('timeout'));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(t);
      resolve(sock);
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(new Error(e.code ?? e.message));
    });
  });
}

async function tcpOnce(host: string, port: number, timeoutMs: number, holdMs: number, peerAfterMs: number): Promise<Attempt> {
  const t0 = Date.now();
  const h0 = process.hrtime.bigint();
  let sock: net.Socket | null = null;
  try {
    sock = await connect(host, port, timeoutMs);
    const body = await httpExchange(sock, timeoutMs);
    if (peerAfterMs > 0) await sleep(peerAfterMs); // remoteAddress calls getpeername() on first use
    const peer = hostPort(sock.remoteAddress ?? '', sock.remotePort ?? 0);
    const a: Attempt = { ok: true, ...parseBody(body), peer, ms: Date.now() - t0, us: Number(process.hrtime.bigint() - h0) / 1000 };
    if (holdMs > 0) await sleep(holdMs);
    return a;
  } catch (e) {
    return { ok: false, error: (e as Error).message, ms: Date.now() - t0 };
  } finally {
    sock?.destroy();
  }
}

/**
 * One datagram and its reply. On a connected socket an ICMP port unreachable
 * comes back as an 'error' event with ECONNREFUSED (on this or the next send).
 */
function udpRequest(sock: dgram.Socket, connected: boolean, host: string, port: number, timeoutMs: number, payload: Buffer | null): Promise<Attempt> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const t = setTimeout(() => finish({ ok: false, error: 'timeout', ms: Date.now() - t0 }), timeoutMs);
    const onMsg = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
      const from = `${rinfo.address}:${rinfo.port}`;
      const peer = connected ? remote(sock) : undefined;
      if (!payload) return finish({ ok: true, ...parseBody(msg.toString()), from, ...(peer ? { peer } : {}), ms: Date.now() - t0 });
      // A mirror's reply: its line, a newline, then our datagram.
      const nl = msg.indexOf(10);
      const back = nl < 0 ? Buffer.alloc(0) : msg.subarray(nl + 1);
      const intact = back.equals(payload);
      finish({ ok: intact, ...parseBody(msg.subarray(0, Math.max(nl, 0)).toString()), from, echoed: back.length, ...(intact ? {} : { error: 'corrupt' }), ms: Date.now() - t0 });
    };
    const onErr = (e: NodeJS.ErrnoException): void => finish({ ok: false, error: e.code ?? e.message, ms: Date.now() - t0 });
    let finished = false;
    function finish(a: Attempt): void {
      if (finished) return;
      finished = true;
      clearTimeout(t);
      sock.off('message', onMsg);
      sock.off('error', onErr);
      resolve(a);
    }
    sock.on('message', onMsg);
    sock.on('error', onErr);
    const cb = (err: Error | null): void => {
      if (err) onErr(err);
    };
    const data = payload ?? 'ping';
    if (connected) sock.send(data, cb);
    else sock.send(data, port, host, cb);
  });
}

/** getpeername() of a connected datagram socket. */
function remote(sock: dgram.Socket): string | undefined {
  try {
    const r = sock.remoteAddress();
    return hostPort(r.address, r.port);
  } catch {
    return undefined;
  }
}

function openUdp(host: string, port: number, connect: boolean): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    sock.once('error', reject);
    const bind = arg('bind') || undefined;
    sock.bind(num('sport', 0, 0, 65535), bind, () => {
      if (!connect) {
        sock.off('error', reject);
        resolve(sock);
        return;
      }
      sock.connect(port, host, (err?: Error) => {
        sock.off('error', reject);
        if (err) {
          sock.close();
          reject(err);
        } else resolve(sock);
      });
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function tcpCmd(host: string, port: number, timeoutMs: number): Promise<Attempt[]> {
  const count = num('count', 1, 1, MAX_COUNT);
  const holdMs = num('hold-ms', 0, 0, MAX_DURATION_MS);
  const peerAfterMs = num('peer-after-ms', 0, 0, MAX_DURATION_MS);
  const attempts: Attempt[] = [];
  for (let i = 0; i < count; i++) attempts.push(await tcpOnce(host, port, timeoutMs, holdMs, peerAfterMs));
  return attempts;
}

async function udpCmd(host: string, port: number, timeoutMs: number): Promise<Attempt[]> {
  const count = num('count', 1, 1, MAX_COUNT);
  const same = process.argv.includes('--same-socket');
  const connected = same || process.argv.includes('--connect');
  const interval = num('interval-ms', same ? 50 : 0, 0, 10_000);
  const size = num('size', 0, 0, 65_507);
  // Bytes that differ along the datagram, so a fragment put in the wrong place shows.
  const payload = size ? Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + (i >> 8)) & 0xff)) : null;
  const attempts: Attempt[] = [];
  const shared = same ? await openUdp(host, port, true) : null;
  // An error between two requests (a destroyed socket's ECONNABORTED) is the next request's outcome.
  let between: string | null = null;
  shared?.on('error', (e: NodeJS.ErrnoException) => void (between ??= e.code ?? e.message));
  for (let i = 0; i < count; i++) {
    const t0 = Date.now();
    if (between) {
      attempts.push({ ok: false, error: between, ms: 0 });
      between = null;
      if (interval && i < count - 1) await sleep(interval);
      continue;
    }
    // connect() itself may be refused (a socket hook's verdict on a UDP socket).
    const sock = shared ?? (await openUdp(host, port, connected).catch((e: NodeJS.ErrnoException) => ({ refused: e.code ?? e.message })));
    if ('refused' in sock) {
      attempts.push({ ok: false, error: sock.refused, ms: Date.now() - t0 });
      continue;
    }
    attempts.push(await udpRequest(sock, connected, host, port, timeoutMs, payload));
    if (!shared) sock.close();
    if (interval && i < count - 1) await sleep(interval);
  }
  shared?.close();
  return attempts;
}

async function holdCmd(host: string, port: number, timeoutMs: number): Promise<Attempt[]> {
  const duration = num('duration-ms', 1000, 0, MAX_DURATION_MS);
  const interval = num('interval-ms', 100, 10, MAX_DURATION_MS);
  const attempts: Attempt[] = [];
  const t0 = Date.now();
  let sock: net.Socket | null = null;
  try {
    sock = await connect(host, port, timeoutMs);
    process.stdout.write('connected\n');
    while (Date.now() - t0 < duration) {
      const s = Date.now();
      try {
        attempts.push({ ok: true, ...parseBody(await httpExchange(sock, timeoutMs)), ms: Date.now() - s });
      } catch (e) {
        attempts.push({ ok: false, error: (e as Error).message, ms: Date.now() - s });
        break;
      }
      await sleep(interval);
    }
  } catch (e) {
    attempts.push({ ok: false, error: (e as Error).message, ms: Date.now() - t0 });
  } finally {
    sock?.destroy();
  }
  return attempts;
}

async function main(): Promise<void> {
  const cmd = process.argv[2];
  const { host, port } = target();
  const timeoutMs = num('timeout-ms', 2000, 1, 60_000);
  let attempts: Attempt[];
  if (cmd === 'tcp') attempts = await tcpCmd(host, port, timeoutMs);
  else if (cmd === 'udp') attempts = await udpCmd(host, port, timeoutMs);
  else if (cmd === 'hold') attempts = await holdCmd(host, port, timeoutMs);
  else throw new Error(`unknown command ${cmd ?? ''} (tcp, udp, hold)`);
  process.stdout.write(JSON.stringify({ attempts }) + '\n');
}

// box.ts imports the Attempt type from here; run only as a program.
if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`client: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  });
}
