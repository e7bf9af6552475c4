/**
 * The generative test's fixed budget in `make test`: two seeds of the
 * soak (test/soak/soak.ts) against the real agent in a dual-stack box, and
 * one in each fallback mode, a few minutes in all. Longer runs: `make soak
 * SEED=n STEPS=m SEEDS=k [MODE=nftables|iptables]`.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { soak } from '../soak/soak';

const STEPS = 60;
for (const seed of [101, 202]) {
  test(`soak: seed ${seed}, ${STEPS} random steps over both families, the oracle holds after each`, async () => {
    const st = await soak({ seed, steps: STEPS });
    // The oracle's real connections covered both families: a generator that stopped making one would pass vacuously.
    assert.ok(st.reached.v4 > 0 && st.reached.v6 > 0, `connections reached per family: ${JSON.stringify(st.reached)}`);
    assert.ok(st.refused.v4 + st.refused.v6 > 0, `gone ClusterIPs tried: ${JSON.stringify(st.refused)}`);
  });
}

// The fallbacks: the agent's rules against a first commit of the same plan, with hand edits made with nft or iptables.
for (const mode of ['nftables', 'iptables'] as const) {
  test(`soak in ${mode} mode: seed 2, ${STEPS} random steps over both families, the oracle holds after each`, async () => {
    const st = await soak({ seed: 2, steps: STEPS, mode });
    assert.ok(st.reached.v4 > 0 && st.reached.v6 > 0, `connections reached per family: ${JSON.stringify(st.reached)}`);
    if (mode === 'nftables') assert.ok(st.nftEdits > 0, 'hand edits made with nft (and repaired)');
    if (mode === 'iptables') assert.ok(st.iptEdits > 0, 'tables flushed or replaced, hooks deleted (and repaired)');
  });
}

test.run();
