/**
 * Backend server run inside a pod namespace:
 *   node echo.js --name NAME --tcp 8080,9090 --udp 5353 [--udp-mirror 7777]
 * TCP ports answer any HTTP/1.1 request with the body
 * `NAME <peer ip>:<peer port>\n` and header `x-backend: NAME`; UDP ports
 * answer every datagram with `NAME <peer ip>:<peer port>`; --udp-mirror
 * ports answer with that line, a newline and the datagram itself (large
 * datagrams come back as large: fragmented replies). The peer is the
 * source the backend saw: what tests check for masquerade. Listens on
 * 0.0.0.0 (plain IPv4 peers, no ::ffff: prefix) and, with --ipv6, on ::
 * (IPv6 only; an IPv6 peer is written [ip]:port). Prints `ready` once every
 * port listens; exits non-zero if any port cannot be bound.
 */
import * as dgram from 'node:dgram';
import * as http from 'node:http';

function arg(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? '') : '';
}

function ports(name: string): number[] {
  const list = arg(name).split(',').filter(Boolean).map(Number);
  for (const p of list) if (!Number.isInteger(p) || p < 1 || p > 65535) fail(`bad --${name} port ${p}`);
  return list;
}

function fail(msg: string): never {
  process.stderr.write(`echo: ${msg}\n`);
  process.exit(1);
}

const name = arg('name') || 'echo';
const tcp = ports('tcp');
const udp = ports('udp');
const mirror = new Set(ports('udp-mirror'));
const families = process.argv.includes('--ipv6') ? (['0.0.0.0', '::'] as const) : (['0.0.0.0'] as const);
let pending = (tcp.length + udp.length + mirror.size) * families.length;
const ready = (): void => {
  if (--pending === 0) process.stdout.write('ready\n');
};

const peer = (addr: string | undefined, port: number | undefined): string => (addr?.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);

for (const [port, host] of tcp.flatMap((p) => families.map((h) => [p, h] as const))) {
  const server = http.createServer((req, res) => {
    const body = `${name} ${peer(req.socket.remoteAddress, req.socket.remotePort)}\n`;
    // Explicit length: after writeHead() Node would otherwise send chunked.
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-backend': name });
    res.end(body);
  });
  // Long keep-alive: `hold` clients reuse one connection across agent restarts.
  server.keepAliveTimeout = 60_000;
  server.on('error', (e) => fail(`tcp ${port}: ${e.message}`));
  server.listen({ port, host, ipv6Only: host === '::' }, ready);
}

for (const [port, host] of [...udp, ...mirror].flatMap((p) => families.map((h) => [p, h] as const))) {
  const sock = host === '::' ? dgram.createSocket({ type: 'udp6', ipv6Only: true }) : dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const line = `${name} ${peer(rinfo.address, rinfo.port)}`;
    const reply = mirror.has(port) ? Buffer.concat([Buffer.from(`${line}\n`), msg]) : line;
    // A reply that cannot be sent (no route back) is the test's finding, not a reason to die.
    sock.send(reply, rinfo.port, rinfo.address, () => undefined);
  });
  const onBindError = (e: Error): void => fail(`udp ${port}: ${e.message}`);
  sock.once('error', onBindError);
  sock.bind(port, host, () => {
    sock.off('error', onBindError);
    sock.on('error', (e) => process.stderr.write(`echo: udp ${port}: ${e.message}\n`));
    ready();
  });
}

if (pending === 0) process.stdout.write('ready\n');
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
