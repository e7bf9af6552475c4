/**
 * `weir services` in iptables mode: the programmed frontends and endpoints,
 * read back from weir's own chains (iptables-save), in the same view the
 * BPF mode prints from its maps. Slot numbers are rule order; backend ids
 * are assigned in order of appearance (iptables has none). IPv6 frontends
 * are read from ip6tables-save the same way and listed after IPv4 ones.
 */
import { BackendView, FrontendView, ServicesView } from '../datapath/dump';
import { IP, compareIP } from '../model/types';
import { CommandRunner, runCommand } from './command';

/** The parts of one saved rule we read; iptables-save reorders matches, so each is found on its own. */
interface Rule {
  chain: string;
  comment: string;
  dst: string | undefined;
  proto: string | undefined;
  dport: number | undefined;
  target: string | undefined;
  line: string;
}

function parseRule(line: string): Rule | null {
  const chain = /^-A (\S+)/.exec(line)?.[1];
  if (!chain) return null;
  return {
    chain,
    comment: /--comment "([^"]*)"/.exec(line)?.[1] ?? '',
    dst: /(?:^| )-d ([\d.]+)\/32/.exec(line)?.[1] ?? /(?:^| )-d ([\da-f:]+)\/128/.exec(line)?.[1],
    proto: / -p (\w+)/.exec(line)?.[1],
    dport: Number(/--dport (\d+)/.exec(line)?.[1] ?? NaN) || undefined,
    target: / -j (\S+)/.exec(line)?.[1],
    line,
  };
}

export function iptablesServices(run: CommandRunner = runCommand): ServicesView | null {
  const backends = new Map<string, BackendView>();
  const v4 = familyFrontends(run, 'iptables-save', backends);
  if (!v4) return null;
  const frontends = [...v4, ...(familyFrontends(run, 'ip6tables-save', backends) ?? [])];
  frontends.sort((a, b) => compareIP(a.addr as IP, b.addr as IP) || a.port - b.port || a.proto.localeCompare(b.proto));
  return { frontends, backends: [...backends.values()] };
}

/** One family's frontends, from its save command's output; null when weir has no chains there. */
function familyFrontends(run: CommandRunner, save: string, backends: Map<string, BackendView>): FrontendView[] | null {
  const nat = run([save, '-t', 'nat']);
  if (nat.code !== 0 || !nat.stdout.includes(':WEIR-SERVICES')) return null;
  const filter = run([save, '-t', 'filter']);
  const rules = nat.stdout
    .split('\n')
    .map(parseRule)
    .filter((r): r is Rule => r !== null);
  const chainRules = new Map<string, Rule[]>();
  for (const r of rules) {
    const list = chainRules.get(r.chain);
    if (list) list.push(r);
    else chainRules.set(r.chain, [r]);
  }
  const beOf = (addr: string, port: number, proto: string): BackendView => {
    const k = `${addr}:${port}/${proto}`;
    let b = backends.get(k);
    if (!b) backends.set(k, (b = { id: backends.size + 1, addr, port, proto, flags: [] }));
    return b;
  };
  /** Endpoints a chain leads to: SVC/SVL directly, EXT through its last jump. */
  const endpoints = (chain: string): BackendView[] => {
    const own = chainRules.get(chain) ?? [];
    if (chain.startsWith('WEIR-EXT-')) {
      const target = own.at(-1)?.target;
      return target && /^WEIR-(SVC|SVL)-/.test(target) ? endpoints(target) : [];
    }
    const out: BackendView[] = [];
    for (const r of own) {
      // "10.0.0.1:80/TCP" or "[fd00::1]:80/TCP"
      const m = / -> (?:([\d.]+)|\[([\da-f:]+)\]):(\d+)\/(\w+)$/.exec(r.comment);
      if (m && r.target?.startsWith('WEIR-SEP-') && !r.line.includes('--rcheck')) out.push(beOf((m[1] ?? m[2])!, Number(m[3]), m[4]!));
    }
    return out;
  };
  const frontends: FrontendView[] = [];
  for (const r of rules) {
    if ((r.chain !== 'WEIR-SERVICES' && r.chain !== 'WEIR-NODEPORTS') || !r.dst || !r.proto || !r.dport || !r.target) continue;
    if (!/^WEIR-(SVC|SVL|EXT)-/.test(r.target)) continue;
    const c = r.comment;
    const flags = c.endsWith('node port') ? ['node-port'] : c.endsWith('loadbalancer IP') ? ['load-balancer'] : c.endsWith('external IP') ? ['external-ip'] : ['cluster-ip'];
    frontends.push({ addr: r.dst, port: r.dport, proto: r.proto.toUpperCase(), scope: 'all', revNatId: 0, flags, affinityTimeout: 0, backends: endpoints(r.target) });
  }
  for (const r of filter.stdout.split('\n').map(parseRule)) {
    if (!r || r.chain !== 'WEIR-SERVICES' || !r.dst || !r.proto || !r.dport || (r.target !== 'REJECT' && r.target !== 'DROP')) continue;
    frontends.push({ addr: r.dst, port: r.dport, proto: r.proto.toUpperCase(), scope: 'all', revNatId: 0, flags: r.target === 'DROP' ? ['drop-empty'] : [], affinityTimeout: 0, backends: [] });
  }
  return frontends;
}
