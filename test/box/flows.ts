/**
 * The flow tables of the service suites: each row a client, a destination
 * and what a kube-proxy user expects there (which backends answer, REJECT /
 * DROP, the source the backend sees), run with real clients through the box.
 */
import { Box, OUTSIDE_IP, OUTSIDE_IP6, Results } from './box';

/** REJECT: refused at once; DROP: timeout; EPERM: the socket hook refused; UNROUTED: not NATed, the node has no route. */
export type Expect = string[] | 'REJECT' | 'DROP' | 'EPERM' | 'UNROUTED';
export interface Flow {
  from: string;
  to: string;
  proto?: 'tcp' | 'udp';
  bind?: string;
  expect: Expect;
  /** Source the backend must see: 'client' (unchanged), an IP (masquerade), or 'any'. */
  src?: string;
  why: string;
  /** The kube-proxy unit test and case this row comes from (pkg/proxy/iptables/proxier_test.go unless named). */
  ref?: string;
  /** REJECT, EPERM, UNROUTED: how soon the client must see it, ms (default 300: at once). */
  within?: number;
}

const COUNT = 16; // two backends: P(one never chosen) = 2^-15

/** The client's address in the destination's family ([IPv6]:port destinations are IPv6 rows). */
function clientIP(box: Box, f: Flow): string {
  if (f.bind) return f.bind;
  const v6 = f.to.startsWith('[');
  if (f.from === 'outside') return v6 ? OUTSIDE_IP6 : OUTSIDE_IP;
  return v6 ? box.pod(f.from).ip6 : box.pod(f.from).ip;
}

/** The address of `IPv4:port` or `[IPv6]:port`. */
export function hostOf(endpoint: string): string {
  return endpoint.startsWith('[') ? endpoint.slice(1, endpoint.indexOf(']')) : endpoint.slice(0, endpoint.lastIndexOf(':'));
}

/** Every flow of a table against the running agents; one line per flow that differs from its expectation. */
export async function runFlows(box: Box, flows: readonly Flow[]): Promise<string[]> {
  const failures: string[] = [];
  for (const f of flows) {
    const fail = (msg: string): void => void failures.push(`${f.from}${f.bind ? `(${f.bind})` : ''} -> ${f.to}/${f.proto ?? 'tcp'} [${f.why}${f.ref ? `; kube-proxy ${f.ref}` : ''}]: ${msg}`);
    const blocked = typeof f.expect === 'string';
    const within = f.within ?? 300;
    const opts = { count: blocked ? 2 : COUNT, timeoutMs: blocked ? Math.max(700, within + 500) : 2000, ...(f.bind ? { bind: f.bind } : {}) };
    const r: Results = f.proto === 'udp' ? await box.udp(f.from, f.to, { ...opts, connect: true }) : await box.tcp(f.from, f.to, opts);
    if (typeof f.expect === 'string') {
      const want = { REJECT: 'ECONNREFUSED', DROP: 'timeout', EPERM: 'EPERM', UNROUTED: 'ENETUNREACH' }[f.expect];
      const got = r.attempts.map((a) => (a.ok ? `ok:${a.backend}` : a.error));
      if (!got.every((g) => g === want)) fail(`want ${want}, got ${got.join(',')}`);
      if (f.expect !== 'DROP' && r.attempts.some((a) => a.ms > within)) fail(`not within ${within} ms: ${r.attempts.map((a) => a.ms).join(',')} ms`);
      continue;
    }
    const bad = r.attempts.filter((a) => !a.ok);
    if (bad.length) {
      fail(`${bad.length} failed: ${bad.map((a) => a.error).join(',')}`);
      continue;
    }
    const seen = [...new Set(r.attempts.map((a) => a.backend!))].sort();
    if (JSON.stringify(seen) !== JSON.stringify([...f.expect].sort())) fail(`backends ${seen.join(',')}, want ${f.expect.join(',')}`);
    if (f.src && f.src !== 'any') {
      const want = f.src === 'client' ? clientIP(box, f) : f.src;
      const srcs = [...new Set(r.attempts.map((a) => hostOf(a.seenSrc!)))];
      if (srcs.length !== 1 || srcs[0] !== want) fail(`backend saw ${srcs.join(',')}, want ${want}`);
    }
  }
  return failures;
}

/*
 * kube-proxy's TestInternalExternalMasquerade, as data: the same for both
 * families (services.test.ts and services6.test.ts give it their services
 * and addresses; IPv6 has no localhost rows: no NodePort answers on ::1).
 */
export type Reach = 'all' | 'local';
/** [client, destination] -> per service (Cluster, eTP:Local, iTP:Local): endpoints and masquerade, as kube-proxy's table states. */
export const IEM_CASES: ReadonlyArray<readonly [string, 'ClusterIP' | 'NodePort' | 'LB', readonly (readonly [Reach, boolean])[]]> = [
  [
    'pod',
    'ClusterIP',
    [
      ['all', false],
      ['all', false],
      ['local', false],
    ],
  ],
  [
    'pod',
    'NodePort',
    [
      ['all', true],
      ['all', false],
      ['all', true],
    ],
  ],
  [
    'pod',
    'LB',
    [
      ['all', true],
      ['all', false],
      ['all', true],
    ],
  ],
  [
    'node',
    'ClusterIP',
    [
      ['all', true],
      ['all', true],
      ['local', true],
    ],
  ],
  [
    'node',
    'NodePort',
    [
      ['all', true],
      ['all', true],
      ['all', true],
    ],
  ],
  [
    'localhost',
    'NodePort',
    [
      ['all', true],
      ['all', true],
      ['all', true],
    ],
  ],
  [
    'node',
    'LB',
    [
      ['all', true],
      ['all', true],
      ['all', true],
    ],
  ],
  [
    'external',
    'ClusterIP',
    [
      ['all', true],
      ['all', true],
      ['local', true],
    ],
  ],
  [
    'external',
    'NodePort',
    [
      ['all', true],
      ['local', false],
      ['all', true],
    ],
  ],
  [
    'external',
    'LB',
    [
      ['all', true],
      ['local', false],
      ['all', true],
    ],
  ],
];
