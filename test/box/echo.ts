/**
 * Backend server run inside a pod namespace:
 *   node echo.js --name NAME --tcp 8080,9090 --udp 5353
 * TCP ports answer any HTTP request with `NAME <peer ip>:<peer port>`;
 * UDP ports answer every datagram the same way. The peer address is what
 * the tests check for masquerade: it is the source the backend saw.
 * Prints `ready` once every port listens.
 */
import * as dgram from 'node:dgram';
import * as http from 'node:http';

function arg(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] ?? '' : '';
}

const name = arg('name') || 'echo';
const tcp = arg('tcp').split(',').filter(Boolean).map(Number);
const udp = arg('udp').split(',').filter(Boolean).map(Number);
let pending = tcp.length + udp.length;
const ready = (): void => {
  if (--pending === 0) process.stdout.write('ready\n');
};

for (const port of tcp) {
  const server = http.createServer((req, res) => {
    const body = `${name} ${req.socket.remoteAddress}:${req.socket.remotePort}\n`;
    // Explicit length: after writeHead() Node would otherwise send chunked.
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-backend': name });
    res.end(body);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port, '0.0.0.0', ready);
}

for (const port of udp) {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (_msg, rinfo) => {
    sock.send(`${name} ${rinfo.address}:${rinfo.port}`, rinfo.port, rinfo.address);
  });
  sock.bind(port, '0.0.0.0', ready);
}

if (pending === 0) process.stdout.write('ready\n');
process.on('SIGTERM', () => process.exit(0));
