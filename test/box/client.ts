/**
 * Client run inside a pod or node namespace; prints one JSON line.
 *
 *   tcp  --to IP:PORT --count N [--timeout-ms T]
 *        N sequential connections, each one HTTP request.
 *   udp  --to IP:PORT --count N [--timeout-ms T] [--same-socket] [--interval-ms I]
 *        N requests, each on a new socket or all on one connected socket.
 *   hold --to IP:PORT --duration-ms D --interval-ms I
 *        one TCP connection, a request every I ms for D ms.
 *
 * --bind IP picks the source address. UDP attempts also report `from`, the
 * source of the reply as the application saw it.
 *
 * Each attempt reports {ok, backend, seenSrc, error}; error is ECONNREFUSED
 * (refused at once), "timeout", or another errno. Loops are bounded by count
 * and time.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

export interface Attempt {
  ok: boolean;
  backend?: string;
  seenSrc?: string;
  /** UDP: where the reply came from, as recvfrom() reported it. */
  from?: string;
  error?: string;
  ms: number;
  /** TCP: microseconds from connect() to the response read (connect, one request, close). */
  us?: number;
}

function arg(name: string, def = ''): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] ?? def : def;
}

function target(): { host: string; port: number } {
  const [host, port] = arg('to').split(':');
  return { host: host!, port: Number(port) };
}

function parseBody(text: string): { backend: string; seenSrc: string } {
  const [backend, seenSrc] = text.trim().split(/\s+/);
  return { backend: backend ?? '', seenSrc: seenSrc ?? '' };
}

const REQUEST = 'GET / HTTP/1.1\r\nHost: weir\r\nConnection: keep-alive\r\n\r\n';

/** Read one HTTP response (Content-Length framed) from the socket. */
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

async function tcpOnce(host: string, port: number, timeoutMs: number): Promise<Attempt> {
  const t0 = Date.now();
  const h0 = process.hrtime.bigint();
  let sock: net.Socket | null = null;
  try {
    sock = await connect(host, port, timeoutMs);
    const body = await httpExchange(sock, timeoutMs);
    return { ok: true, ...parseBody(body), ms: Date.now() - t0, us: Number(process.hrtime.bigint() - h0) / 1000 };
  } catch (e) {
    return { ok: false, error: (e as Error).message, ms: Date.now() - t0 };
  } finally {
    sock?.destroy();
  }
}

async function udpRequest(sock: dgram.Socket, connected: boolean, host: string, port: number, timeoutMs: number): Promise<Attempt> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const t = setTimeout(() => finish({ ok: false, error: 'timeout', ms: Date.now() - t0 }), timeoutMs);
    const onMsg = (msg: Buffer, rinfo: dgram.RemoteInfo): void =>
      finish({ ok: true, ...parseBody(msg.toString()), from: `${rinfo.address}:${rinfo.port}`, ms: Date.now() - t0 });
    const onErr = (e: NodeJS.ErrnoException): void => finish({ ok: false, error: e.code ?? e.message, ms: Date.now() - t0 });
    function finish(a: Attempt): void {
      clearTimeout(t);
      sock.off('message', onMsg);
      sock.off('error', onErr);
      resolve(a);
    }
    sock.on('message', onMsg);
    sock.on('error', onErr);
    const cb = (err: Error | null): void => {
      if (err) onErr(err as NodeJS.ErrnoException);
    };
    if (connected) sock.send('ping', cb);
    else sock.send('ping', port, host, cb);
  });
}

function openUdp(host: string, port: number, connect: boolean): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    sock.once('error', reject);
    const bind = arg('bind') || undefined;
    sock.bind(0, bind, () => {
      if (!connect) {
        resolve(sock);
        return;
      }
      sock.connect(port, host, () => {
        sock.off('error', reject);
        resolve(sock);
      });
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const cmd = process.argv[2];
  const { host, port } = target();
  const count = Math.min(Number(arg('count', '1')), 10_000);
  const timeoutMs = Number(arg('timeout-ms', '2000'));
  const attempts: Attempt[] = [];
  if (cmd === 'tcp') {
    for (let i = 0; i < count; i++) attempts.push(await tcpOnce(host, port, timeoutMs));
  } else if (cmd === 'udp') {
    const interval = Number(arg('interval-ms', '0'));
    if (process.argv.includes('--same-socket')) {
      const sock = await openUdp(host, port, true);
      for (let i = 0; i < count; i++) {
        attempts.push(await udpRequest(sock, true, host, port, timeoutMs));
        if (interval) await sleep(interval);
      }
      sock.close();
    } else {
      for (let i = 0; i < count; i++) {
        const sock = await openUdp(host, port, process.argv.includes('--connect'));
        attempts.push(await udpRequest(sock, process.argv.includes('--connect'), host, port, timeoutMs));
        sock.close();
        if (interval) await sleep(interval);
      }
    }
  } else if (cmd === 'hold') {
    const duration = Math.min(Number(arg('duration-ms', '1000')), 120_000);
    const interval = Math.max(Number(arg('interval-ms', '100')), 10);
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
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
  process.stdout.write(JSON.stringify({ attempts }) + '\n');
}

void main();
