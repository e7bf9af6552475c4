/**
 * The generative test's fixed budget in `make test`: two seeds of the
 * soak (test/soak/soak.ts) against the real agent, a few minutes in all.
 * Longer runs: `make soak SEED=n STEPS=m SEEDS=k`.
 */
import { test } from 'uvu';
import { soak } from '../soak/soak';

const STEPS = 60;
for (const seed of [101, 202]) {
  test(`soak: seed ${seed}, ${STEPS} random steps, the oracle holds after each`, async () => {
    await soak({ seed, steps: STEPS });
  });
}

test.run();
