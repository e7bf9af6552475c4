/**
 * The generative test's fixed budget in `make test`: two seeds of the
 * soak (test/soak/soak.ts) against the real agent in a dual-stack box, a
 * few minutes in all. Longer runs: `make soak SEED=n STEPS=m SEEDS=k`.
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

test.run();
