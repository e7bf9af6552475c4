/**
 * `make soak SEED=n STEPS=m [SEEDS=k] [MODE=nftables|iptables]`: the
 * generative test of test/soak/soak.ts for seeds n .. n+k-1, m steps each.
 * Prints a line per step; on a failure, the seed, the steps and what broke,
 * and exits 1.
 */
import { soak } from './soak';

async function main(): Promise<number> {
  const num = (name: string, dflt: number): number => {
    const v = process.env[name];
    const n = v === undefined || v === '' ? dflt : Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name}: expected a whole number, got ${JSON.stringify(v)}`);
    return n;
  };
  const seed = num('SEED', 1);
  const steps = num('STEPS', 200);
  const seeds = num('SEEDS', 1);
  const mode = process.env.MODE || 'bpf';
  if (mode !== 'bpf' && mode !== 'nftables' && mode !== 'iptables') throw new Error(`MODE: expected bpf, nftables or iptables, got ${JSON.stringify(mode)}`);
  for (let s = seed; s < seed + seeds; s++) {
    const t0 = Date.now();
    const st = await soak({ seed: s, steps, mode, log: (l) => process.stdout.write(l + '\n') });
    const per = (x: Record<'v4' | 'v6', number>): string => `${x.v4} IPv4, ${x.v6} IPv6`;
    process.stdout.write(
      `seed ${s}: ${steps} steps, no violation (${Math.round((Date.now() - t0) / 1000)} s); ` +
        `connections reached: ${per(st.reached)}; gone ClusterIPs refused: ${per(st.refused)}; ${{ bpf: `revnat entries deleted by hand: ${per(st.revnatEdits)}`, nftables: `hand edits with nft: ${st.nftEdits}`, iptables: `tables flushed or replaced, hooks deleted: ${st.iptEdits}` }[mode]}\n`,
    );
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
